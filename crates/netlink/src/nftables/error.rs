//! Errors that say which message failed, on which object, and why.

use std::fmt;
use std::path::PathBuf;

use nix::errno::Errno;

/// What a batch message asked the kernel to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Add,
    Insert,
    Replace,
    Delete,
    /// Delete if present (Linux 6.3+).
    Destroy,
    Flush,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Add => "add",
            Operation::Insert => "insert",
            Operation::Replace => "replace",
            Operation::Delete => "delete",
            Operation::Destroy => "destroy",
            Operation::Flush => "flush",
        })
    }
}

/// One message of a batch that the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub operation: Operation,
    /// The object, as nft would name it: `chain ip ferry services`,
    /// `elements of map ip ferry service-ips`, `rule in chain ...`.
    pub object: String,
    pub errno: Errno,
    /// The kernel's extended-ack message, or the failing set element.
    pub detail: Option<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.operation,
            self.object,
            self.errno.desc()
        )?;
        write!(f, " ({:?})", self.errno)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

fn describe_failures(failures: &[Failure]) -> String {
    match failures {
        [] => "no details".to_string(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("nf_tables: cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),

    #[error("nf_tables: cannot enter network namespace {path}: {source}")]
    Netns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The batch could not be encoded (nothing was sent).
    #[error("nf_tables: cannot encode {operation} {object}: {reason}")]
    Encode {
        operation: Operation,
        object: String,
        reason: String,
    },

    #[error("nf_tables: netlink I/O failed: {0}")]
    Io(#[source] std::io::Error),

    /// The kernel refused one or more messages; the whole batch was
    /// rolled back.
    #[error("nf_tables: batch refused, nothing applied: {}", describe_failures(.failures))]
    Rejected { failures: Vec<Failure> },

    /// The kernel accepted every message but refused the batch as a whole
    /// (e.g. an out-of-memory at commit); nothing was applied.
    #[error("nf_tables: batch failed, nothing applied: {} ({errno:?})", .errno.desc())]
    Batch { errno: Errno },

    /// [`super::Batch::expect_generation`] was set and the ruleset changed
    /// since; nothing was applied. List again and recompute.
    #[error("nf_tables: ruleset changed since generation {expected}, nothing applied")]
    GenerationChanged { expected: u32 },

    #[error("nf_tables: listing {what} failed: {} ({errno:?})", .errno.desc())]
    Dump { what: String, errno: Errno },

    #[error("nf_tables: unexpected answer from the kernel: {0}")]
    Protocol(String),
}

impl Error {
    /// The errno of the first failure, if the kernel gave one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Rejected { failures } => failures.first().map(|f| f.errno),
            Error::Batch { errno } | Error::Dump { errno, .. } => Some(*errno),
            Error::Socket(e) | Error::Io(e) | Error::Netns { source: e, .. } => {
                e.raw_os_error().map(Errno::from_raw)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_batches_name_operation_object_and_errno() {
        let err = Error::Rejected {
            failures: vec![
                Failure {
                    operation: Operation::Add,
                    object: "rule in chain ip ferry nope".into(),
                    errno: Errno::ENOENT,
                    detail: None,
                },
                Failure {
                    operation: Operation::Delete,
                    object: "chain ip ferry busy".into(),
                    errno: Errno::EBUSY,
                    detail: None,
                },
            ],
        };
        assert_eq!(
            err.to_string(),
            "nf_tables: batch refused, nothing applied: add rule in chain ip ferry nope: \
             No such file or directory (ENOENT) (and 1 more)"
        );
        assert_eq!(err.errno(), Some(Errno::ENOENT));
    }
}
