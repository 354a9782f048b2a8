//! The lab runtime: runs a Pod's containers as host processes inside the
//! pod's network namespace, with a UTS namespace of their own (hostname =
//! pod name) and a mount namespace in which the pod's own `/etc/hosts` and
//! `/etc/resolv.conf` are bind-mounted over the host's.
//!
//! A container process is started through `ferry lab-run` (see
//! [`lab_run_main`]): a short-lived, single-threaded step that enters the
//! namespaces and then `exec`s the command, or runs a built-in program
//! (images without a command: nginx/httpd → [`Builtin::Web`],
//! `ferry/echo` → [`Builtin::Echo`]). An image named `ferry` (`ferry`,
//! `ferry/ferry:0.1.0`, `ghcr.io/ferry-dev/ferry:0.1.0`, ...) without a
//! command runs the Ferry binary itself with the container's `args`
//! (`ferry dns ...`): `ferry lab-run` execs [`SELF_EXE`].

mod builtin;
mod env;
mod lab_run;
mod probe;
mod process;
pub mod pty;

use std::path::PathBuf;

pub use builtin::web_page;
pub use env::{DEFAULT_PATH, container_env, expand};
pub use lab_run::lab_run_main;
pub use probe::{probe_http, probe_tcp};
pub(crate) use process::lab_run_command;
pub use process::{Console, Process, exec_in, kill_session};

/// argv[0] of containers of the `ferry` image: the binary `ferry lab-run`
/// is running, which is the Ferry binary. The magic link resolves in every
/// mount namespace, and still to the same binary when the file was
/// replaced on disk since.
pub const SELF_EXE: &str = "/proc/self/exe";

/// Document root of the nginx image (`/usr/share/nginx/html`).
pub const NGINX_HTML: &str = "/usr/share/nginx/html";
/// Document root of the httpd image.
pub const HTTPD_HTDOCS: &str = "/usr/local/apache2/htdocs";

/// Where a container runs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sandbox {
    /// Network namespace file (`/run/netns/<sandbox>`); `None`: the agent's
    /// own namespace (`hostNetwork: true`).
    pub netns: Option<PathBuf>,
    /// Hostname in the container's UTS namespace (the pod name; for
    /// hostNetwork pods the node name).
    pub hostname: String,
    /// File bind-mounted over `/etc/hosts`.
    pub hosts_file: PathBuf,
    /// File bind-mounted over `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
}

/// What a container runs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Program {
    /// `command` + `args` (after `$(VAR)` expansion); argv[0] is looked up
    /// in PATH.
    Exec { argv: Vec<String> },
    /// A program built into `ferry`.
    Builtin(Builtin),
}

/// Built-in programs for images that have no command.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Builtin {
    /// nginx/httpd: HTTP on every port, files from `root` as the pod sees
    /// it (its own directory, bind-mounted there; `index.html` starts as a
    /// page naming the pod).
    Web {
        pod_name: String,
        ports: Vec<u16>,
        root: PathBuf,
    },
    /// `ferry/echo`, like agnhost netexec: HTTP `/hostname`, `/clientip`,
    /// `/echo?msg=`, `/healthz`, `/exit?code=`; UDP `hostname`,
    /// `echo <msg>`, `clientip`.
    Echo { http_port: u16, udp_port: u16 },
}

/// An image the runtime cannot run (no command and no built-in program).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    /// Container status `waiting.reason`.
    pub reason: String,
    /// Container status `waiting.message`.
    pub message: String,
}

/// Everything needed to start one container process.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ContainerSpec {
    pub sandbox: Sandbox,
    pub program: Program,
    /// Final environment (already resolved and expanded).
    pub env: Vec<(String, String)>,
    /// `workingDir`; `None`: `/`.
    pub working_dir: Option<PathBuf>,
    /// stdout and stderr are appended here (kubectl logs reads it).
    pub log_path: PathBuf,
    /// Join the namespaces (network, UTS, mount) of this running process
    /// instead of making new ones: `kubectl exec` runs inside the
    /// container it names, as a container runtime's exec does.
    #[serde(default)]
    pub join_pid: Option<u32>,
    /// stdin is a terminal: the program gets a session of its own with that
    /// terminal as its controlling terminal (`tty: true`, `exec -t`).
    #[serde(default)]
    pub tty: bool,
    /// Bind mounts `(source on the host, target as the pod sees it)` made
    /// in the container's mount namespace; a missing target directory is
    /// created first.
    #[serde(default)]
    pub mounts: Vec<(PathBuf, PathBuf)>,
}

/// How a container process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// Exit code; 128 + signal number when killed by a signal.
    pub code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
}

/// Result of one probe attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    Success,
    /// Failure with kubelet-style message (e.g. `HTTP probe failed with
    /// statuscode: 500`, `dial tcp 10.244.1.5:81: connect: connection refused`).
    Failure(String),
}

/// Output of a command run in a sandbox ([`exec_in`]).
#[derive(Clone, Debug)]
pub struct ExecOutput {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Maps a container to what the runtime runs: its `command`/`args` with
/// `$(VAR)` expanded against `env`, else a built-in program for the image,
/// else [`Unsupported`]. `args` without `command` on a built-in image are
/// the built-in's arguments (e.g. `netexec --http-port=8080`); on a `ferry`
/// image they are the arguments of the Ferry binary ([`SELF_EXE`]).
pub fn program_for(
    container: &k8s_openapi::api::core::v1::Container,
    pod_name: &str,
    env: &[(String, String)],
) -> Result<Program, Unsupported> {
    let args: Vec<String> = container
        .args
        .iter()
        .flatten()
        .map(|a| expand(a, env))
        .collect();
    if let Some(command) = container.command.as_ref().filter(|c| !c.is_empty()) {
        let mut argv: Vec<String> = command.iter().map(|c| expand(c, env)).collect();
        argv.extend(args);
        return Ok(Program::Exec { argv });
    }
    let image = container.image.as_deref().unwrap_or_default();
    let repo = image_repository(image);
    let base = repo.rsplit('/').next().unwrap_or_default();
    if base == "nginx" || base == "httpd" {
        // The images' entrypoints run their arguments as the command
        // (nginx's docker-entrypoint.sh execs "$@"; httpd has only a CMD),
        // unless they start the server itself.
        let server = ["nginx", "nginx-debug", "httpd-foreground", "httpd"];
        if let Some(first) = args.first()
            && !server.contains(&first.as_str())
        {
            return Ok(Program::Exec { argv: args });
        }
        let mut ports: Vec<u16> = container
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| u16::try_from(p.container_port).ok())
            .collect();
        if ports.is_empty() {
            ports.push(80);
        }
        ports.sort_unstable();
        ports.dedup();
        return Ok(Program::Builtin(Builtin::Web {
            pod_name: pod_name.to_string(),
            ports,
            root: PathBuf::from(if base == "nginx" {
                NGINX_HTML
            } else {
                HTTPD_HTDOCS
            }),
        }));
    }
    if base == "ferry" {
        let mut argv = vec![SELF_EXE.to_string()];
        argv.extend(args);
        return Ok(Program::Exec { argv });
    }
    let echo = repo == "ferry/echo" || repo.ends_with("/ferry/echo");
    let agnhost = base == "agnhost" && args.first().map(String::as_str) == Some("netexec");
    if echo || agnhost {
        return Ok(Program::Builtin(Builtin::Echo {
            http_port: flag_port(&args, "--http-port").unwrap_or(8080),
            udp_port: flag_port(&args, "--udp-port").unwrap_or(8081),
        }));
    }
    Err(Unsupported {
        reason: "UnsupportedImage".into(),
        message: format!(
            "the ferry lab runtime cannot run image {image:?} without a command: it runs a \
             container's command as a host process, and has built-in programs only for \
             nginx, httpd and ferry/echo images; a ferry image (e.g. ferry/ferry) runs \
             the Ferry binary with the container's args"
        ),
    })
}

/// `registry/path/name` of an image reference, without tag or digest.
fn image_repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or_default();
    // A ':' after the last '/' starts the tag (a registry port comes before).
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

/// `--name=N` or `--name N` in netexec-style arguments.
fn flag_port(args: &[String], name: &str) -> Option<u16> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            return v.parse().ok();
        }
        if a == name {
            return it.next().and_then(|v| v.parse().ok());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(v: serde_json::Value) -> k8s_openapi::api::core::v1::Container {
        serde_json::from_value(v).expect("container")
    }

    #[test]
    fn images_map_to_programs() {
        let web = container(
            serde_json::json!({"name": "a", "image": "docker.io/library/nginx:1.27",
            "ports": [{"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"}]}),
        );
        assert_eq!(
            program_for(&web, "p", &[]),
            Ok(Program::Builtin(Builtin::Web {
                pod_name: "p".into(),
                ports: vec![8080],
                root: NGINX_HTML.into(),
            }))
        );
        let plain = container(serde_json::json!({"name": "a", "image": "httpd@sha256:abc"}));
        assert!(
            matches!(program_for(&plain, "p", &[]), Ok(Program::Builtin(Builtin::Web { ref ports, ref root, .. })) if ports == &[80] && root.as_os_str() == HTTPD_HTDOCS)
        );
        let echo = container(
            serde_json::json!({"name": "a", "image": "localhost:5000/ferry/echo:1",
            "args": ["netexec", "--http-port=9000", "--udp-port", "9001"]}),
        );
        assert_eq!(
            program_for(&echo, "p", &[]),
            Ok(Program::Builtin(Builtin::Echo {
                http_port: 9000,
                udp_port: 9001
            }))
        );
        let agnhost = container(serde_json::json!({"name": "a",
            "image": "registry.k8s.io/e2e-test-images/agnhost:2.53", "args": ["netexec"]}));
        assert_eq!(
            program_for(&agnhost, "p", &[]),
            Ok(Program::Builtin(Builtin::Echo {
                http_port: 8080,
                udp_port: 8081
            }))
        );
        let cmd = container(serde_json::json!({"name": "a", "image": "nginx",
            "command": ["sh", "-c"], "args": ["echo $(NAME) $$(NAME) $(MISSING)"]}));
        let env = vec![("NAME".to_string(), "web-1".to_string())];
        assert_eq!(
            program_for(&cmd, "p", &env),
            Ok(Program::Exec {
                argv: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo web-1 $(NAME) $(MISSING)".into()
                ]
            })
        );
        for image in [
            "ferry",
            "ferry/ferry:0.1.0",
            "ghcr.io/ferry-dev/ferry:0.1.0",
            "localhost:5000/ferry@sha256:abc",
        ] {
            let dns = container(serde_json::json!({"name": "a", "image": image,
                "args": ["dns", "--kubeconfig", "$(KC)", "--upstream", "none"]}));
            let env = vec![("KC".to_string(), "/lab/node-kubeconfig".to_string())];
            assert_eq!(
                program_for(&dns, "p", &env),
                Ok(Program::Exec {
                    argv: vec![
                        SELF_EXE.into(),
                        "dns".into(),
                        "--kubeconfig".into(),
                        "/lab/node-kubeconfig".into(),
                        "--upstream".into(),
                        "none".into()
                    ]
                }),
                "{image}"
            );
        }
        // Arguments on an nginx image run as the command, as its
        // entrypoint does (`kubectl run --image=nginx x -- sh -c ...`).
        let run = container(serde_json::json!({"name": "a", "image": "nginx:alpine",
            "args": ["sh", "-c", "curl -s web"]}));
        assert_eq!(
            program_for(&run, "p", &[]),
            Ok(Program::Exec {
                argv: vec!["sh".into(), "-c".into(), "curl -s web".into()]
            })
        );
        let server = container(serde_json::json!({"name": "a", "image": "nginx",
            "args": ["nginx", "-g", "daemon off;"]}));
        assert!(matches!(
            program_for(&server, "p", &[]),
            Ok(Program::Builtin(Builtin::Web { .. }))
        ));
        // A command wins over the image's program.
        let sh = container(
            serde_json::json!({"name": "a", "image": "ferry/ferry:0.1.0",
            "command": ["sleep"], "args": ["1"]}),
        );
        assert_eq!(
            program_for(&sh, "p", &[]),
            Ok(Program::Exec {
                argv: vec!["sleep".into(), "1".into()]
            })
        );
        // Only the last path component names the program.
        let other = container(serde_json::json!({"name": "a", "image": "ferry/ferry-proxy:1"}));
        assert!(program_for(&other, "p", &[]).is_err());
        let busybox = container(serde_json::json!({"name": "a", "image": "busybox"}));
        let err = program_for(&busybox, "p", &[]).expect_err("unsupported");
        assert_eq!(err.reason, "UnsupportedImage");
        assert!(err.message.contains("busybox"));
        assert!(err.message.contains("ferry image"), "{}", err.message);
    }
}
