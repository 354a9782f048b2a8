//! `ferry lab-run <spec-json>`: the step between the agent and a
//! container's program. Single-threaded, it enters the pod's network
//! namespace, makes its own UTS and mount namespaces (hostname = pod name;
//! the pod's hosts and resolv.conf files bind-mounted over the host's),
//! sets the working directory and environment, then `exec`s the command or
//! runs a built-in program.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};

use super::{ContainerSpec, Program};

/// Encodes a spec as the single argument of `ferry lab-run`.
pub(crate) fn encode(spec: &ContainerSpec) -> String {
    serde_json::to_string(spec).unwrap_or_default()
}

/// Joins the network, UTS and mount namespaces of a running container
/// process (`kubectl exec`).
fn join(pid: u32) -> Result<(), String> {
    // Open all three first: after the mount namespace changes, /proc may
    // be another one.
    let mut files = Vec::new();
    for (ns, flag) in [
        ("net", CloneFlags::CLONE_NEWNET),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let path = format!("/proc/{pid}/ns/{ns}");
        let file = std::fs::File::open(&path)
            .map_err(|e| format!("opening {path} (is the container running?): {e}"))?;
        files.push((path, file, flag));
    }
    for (path, file, flag) in files {
        setns(&file, flag).map_err(|e| format!("entering {path}: {e}"))?;
    }
    Ok(())
}

fn enter(spec: &ContainerSpec) -> Result<(), String> {
    if let Some(pid) = spec.join_pid {
        join(pid)?;
        return chdir(spec);
    }
    let sandbox = &spec.sandbox;
    if let Some(netns) = &sandbox.netns {
        let file = std::fs::File::open(netns)
            .map_err(|e| format!("opening network namespace {}: {e}", netns.display()))?;
        setns(&file, CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("entering network namespace {}: {e}", netns.display()))?;
    }
    unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("creating UTS and mount namespaces: {e}"))?;
    // Private: the bind mounts below must never reach the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))?;
    for (source, target) in [
        (&sandbox.hosts_file, "/etc/hosts"),
        (&sandbox.resolv_conf, "/etc/resolv.conf"),
    ] {
        if source.exists() && Path::new(target).exists() {
            mount(
                Some(source.as_path()),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| format!("mounting {} on {target}: {e}", source.display()))?;
        }
    }
    for (source, target) in &spec.mounts {
        std::fs::create_dir_all(target)
            .map_err(|e| format!("creating mount point {}: {e}", target.display()))?;
        mount(
            Some(source.as_path()),
            target.as_path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| format!("mounting {} on {}: {e}", source.display(), target.display()))?;
    }
    nix::unistd::sethostname(&sandbox.hostname)
        .map_err(|e| format!("setting hostname {:?}: {e}", sandbox.hostname))?;
    chdir(spec)
}

fn chdir(spec: &ContainerSpec) -> Result<(), String> {
    let dir = spec
        .working_dir
        .clone()
        .unwrap_or_else(|| std::path::PathBuf::from("/"));
    std::env::set_current_dir(&dir)
        .map_err(|e| format!("changing to working directory {}: {e}", dir.display()))?;
    Ok(())
}

/// Entry point of `ferry lab-run`; see the module docs.
pub fn lab_run_main(args: Vec<OsString>) -> i32 {
    let Some(spec) = args
        .first()
        .and_then(|a| a.to_str())
        .and_then(|a| serde_json::from_str::<ContainerSpec>(a).ok())
    else {
        eprintln!("ferry lab-run: expected one JSON container spec argument (internal command)");
        return 2;
    };
    if let Err(e) = enter(&spec) {
        eprintln!("ferry lab-run: {e}");
        return 128;
    }
    if spec.tty {
        // A session of its own, with the terminal on stdin as controlling
        // terminal: job control and ^C work as in a container with a TTY.
        if let Err(e) = rustix::process::setsid()
            .and_then(|_| rustix::process::ioctl_tiocsctty(std::io::stdin()))
        {
            eprintln!("ferry lab-run: making stdin the controlling terminal: {e}");
            return 128;
        }
    }
    match &spec.program {
        Program::Exec { argv } => {
            let Some((program, rest)) = argv.split_first() else {
                eprintln!("ferry lab-run: empty command");
                return 128;
            };
            let error = std::process::Command::new(program)
                .args(rest)
                .env_clear()
                .envs(spec.env.iter().map(|(k, v)| (k, v)))
                .exec();
            eprintln!("ferry lab-run: exec {program:?}: {error}");
            match error.kind() {
                std::io::ErrorKind::NotFound => 127,
                std::io::ErrorKind::PermissionDenied => 126,
                _ => 128,
            }
        }
        Program::Builtin(builtin) => {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(super::builtin::run(
                    builtin.clone(),
                    spec.sandbox.hostname.clone(),
                )),
                Err(e) => {
                    eprintln!("ferry lab-run: starting the runtime: {e}");
                    128
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Builtin, Sandbox};

    #[test]
    fn spec_round_trips_through_the_argument() {
        let spec = ContainerSpec {
            sandbox: Sandbox {
                netns: Some("/run/netns/p 1".into()),
                hostname: "web-0".into(),
                hosts_file: "/var/lib/ferry/pods/u/hosts".into(),
                resolv_conf: "/var/lib/ferry/pods/u/resolv.conf".into(),
            },
            program: Program::Exec {
                argv: vec!["sh".into(), "-c".into(), "echo \"$A\" 'b' \\n ü".into()],
            },
            env: vec![("A".into(), "x=y; z".into())],
            working_dir: Some("/tmp".into()),
            log_path: "/var/log/pods/x/0.log".into(),
            join_pid: Some(42),
            tty: true,
            mounts: vec![("/a".into(), "/usr/share/nginx/html".into())],
        };
        let arg = encode(&spec);
        let back: ContainerSpec = serde_json::from_str(&arg).expect("decodes");
        assert_eq!(back.sandbox, spec.sandbox);
        assert_eq!(back.program, spec.program);
        assert_eq!(back.env, spec.env);
        assert_eq!(back.working_dir, spec.working_dir);
        assert_eq!(
            (back.join_pid, back.tty, &back.mounts),
            (spec.join_pid, spec.tty, &spec.mounts)
        );
        let web = Program::Builtin(Builtin::Web {
            pod_name: "p".into(),
            ports: vec![80, 443],
            root: "/usr/share/nginx/html".into(),
        });
        let spec = ContainerSpec {
            program: web.clone(),
            ..spec
        };
        let back: ContainerSpec = serde_json::from_str(&encode(&spec)).expect("decodes");
        assert_eq!(back.program, web);
    }

    #[test]
    fn bad_argument_is_an_error() {
        assert_eq!(lab_run_main(vec![]), 2);
        assert_eq!(lab_run_main(vec!["{not json".into()]), 2);
    }
}
