//! Ferry's CNI plugin, spec 1.1: puts a pod on its node's pod network.
//!
//! A container runtime (or Ferry's node agent, which calls it exactly as a
//! runtime would) executes the plugin with `CNI_*` environment variables
//! and the network configuration on stdin; the plugin answers on stdout.
//! ADD reserves an address from the node's pod subnet ([`ipam`]), makes
//! sure the bridge (`cni0`) holds the gateway address, connects the pod
//! with a veth pair (`eth0` inside), and sets the pod's address and routes
//! ([`network`]). DEL, CHECK, GC, STATUS and VERSION follow the spec.
//! The config format is described in [`config`].
//!
//! The plugin is the `ferry` binary itself. It runs as the plugin when
//! invoked as `ferry cni`, when its executable is named `ferry-cni`, or
//! when it gets no arguments and `CNI_COMMAND` is set: a runtime executes
//! `$CNI_PATH/<type>` with no arguments, so installing the binary as
//! `/opt/cni/bin/ferry` and configuring `"type": "ferry"` just works.
//!
//! Errors use the spec's codes (1-11, and 50 for STATUS) plus Ferry's own:
//! 100 no free address, 101 a kernel operation failed, 102 CHECK found a
//! difference.

pub mod config;
pub mod fault;
pub mod ipam;
pub mod network;
pub mod plugin;
pub mod spec;

pub use config::NetworkConfig;
pub use plugin::{Response, run};
pub use spec::{CniError, CniResult, ErrorCode};

/// Whether this process was started as a CNI plugin rather than as the
/// `ferry` command line: its executable is named `ferry-cni`, or it has no
/// arguments and `CNI_COMMAND` is set.
pub fn invoked_as_plugin() -> bool {
    let mut args = std::env::args_os();
    let named_plugin = args
        .next()
        .as_deref()
        .and_then(|argv0| std::path::Path::new(argv0).file_name())
        .is_some_and(|name| name == "ferry-cni");
    named_plugin || (args.next().is_none() && std::env::var_os("CNI_COMMAND").is_some())
}

/// Runs the plugin as a process and returns its exit status.
pub fn plugin_main() -> i32 {
    plugin::main()
}
