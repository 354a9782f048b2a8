//! Issue 2, point 1: after a build, `ferry apiserver --data-dir D` starts;
//! `kubectl get ns` lists the four initial namespaces and `kubectl
//! version` shows the server version. Also: TLS 1.2+ only and the admin
//! kubeconfig's token.
#![allow(clippy::unwrap_used)]

mod support;

#[test]
fn kubectl_sees_the_initial_namespaces_and_the_server_version() {
    if !support::kubectl_available() {
        return;
    }
    let server = support::Apiserver::start();
    let out = server.kubectl_ok(&["get", "ns"]);
    let mut lines = out.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["NAME", "STATUS", "AGE"]
    );
    let names: Vec<&str> = lines
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(cells[1], "Active", "{l}");
            cells[0]
        })
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    let version = server.kubectl_ok(&["version"]);
    assert!(
        version
            .lines()
            .any(|l| l.starts_with("Server Version: v1.33.")),
        "{version}"
    );
}

#[test]
fn the_data_dir_holds_the_credentials_and_a_restart_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let mut server = support::Apiserver::start_in(dir.path(), port, &[]);
    let kubeconfig = std::fs::read_to_string(&server.kubeconfig).unwrap();
    assert!(kubeconfig.contains(&format!("server: https://127.0.0.1:{port}")));
    assert!(kubeconfig.contains("certificate-authority-data:"));
    let token = std::fs::read_to_string(dir.path().join("pki/admin.token")).unwrap();
    assert!(token.len() >= 32 && kubeconfig.contains(&format!("token: {token}")));
    let ca = std::fs::read_to_string(dir.path().join("pki/ca.crt")).unwrap();
    // Credentials are private to their owner.
    use std::os::unix::fs::PermissionsExt;
    for f in ["pki/ca.key", "pki/admin.token", "kubeconfig"] {
        let mode = std::fs::metadata(dir.path().join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{f} is readable by others: {mode:o}");
    }
    server.kill();
    let _server = support::Apiserver::start_in(dir.path(), port, &[]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pki/ca.crt")).unwrap(),
        ca
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pki/admin.token")).unwrap(),
        token
    );
}

#[test]
fn only_tls_1_2_and_newer_are_accepted() {
    let Ok(openssl) = std::process::Command::new("openssl")
        .arg("version")
        .output()
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "openssl is required under CI"
        );
        eprintln!("skipping: openssl is not installed");
        return;
    };
    assert!(openssl.status.success());
    let server = support::Apiserver::start();
    let connect = |flag: &str| {
        std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{}", server.port),
                flag,
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    for old in ["-tls1", "-tls1_1"] {
        let out = connect(old);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success()
                || !text.contains("Cipher is ")
                || text.contains("Cipher is (NONE)"),
            "{old} handshake succeeded: {text}"
        );
    }
    for ok in ["-tls1_2", "-tls1_3"] {
        let out = connect(ok);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Protocol") || text.contains("New, TLSv1"),
            "{ok}: {text}"
        );
        assert!(
            !text.contains("Cipher is (NONE)"),
            "{ok} handshake failed: {text}"
        );
    }
}
