//! The hook's contract at its edges: halt is idempotent, and a boot that cannot succeed fails
//! with a reason and leaves no container or seed behind.

use std::net::TcpListener;

use crate::harness::{Server, assert_gone, ensure_image, output, text};

#[test]
fn halt_of_a_server_that_never_booted_succeeds() {
    let server = Server::new();
    for _ in 0..2 {
        let out = server.hook("halt", &[]);
        assert!(out.status.success(), "halt: {}", text(&out.stderr));
    }
    assert_gone(&server);
}

#[test]
fn boot_needs_the_ssh_port() {
    let server = Server::new();
    let out = output(
        server
            .hook_command("boot")
            .env_remove("PB_INSTANCE_SSH_PORT"),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("PB_INSTANCE_SSH_PORT must be set"),
        "{}",
        text(&out.stderr)
    );
    assert_gone(&server);
}

/// With the host's network, anything already answering on the port would pass for the instance's
/// sshd; the hook refuses instead of reporting a boot that did not happen.
#[test]
fn boot_refuses_a_port_something_else_answers_on() {
    ensure_image();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut server = Server::new();
    server.port = listener.local_addr().unwrap().port();
    server.set_user_data("cloud-init", "#cloud-config\n");
    let out = server.hook("boot", &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already accepts connections"),
        "{}",
        text(&out.stderr)
    );
    assert_gone(&server);
}

/// A boot whose sshd does not answer in time fails, and removes what it started (cloud-init's
/// first stages take seconds, so a zero timeout cannot be met).
#[test]
fn boot_that_times_out_removes_its_container() {
    let server = Server::new();
    server.set_user_data("cloud-init", "#cloud-config\n");
    ensure_image();
    let out = server.hook("boot", &[("PB_INSTANCE_BOOT_TIMEOUT", "0")]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("did not answer"), "{stderr}");
    assert!(stderr.contains("the container's last output"), "{stderr}");
    assert_gone(&server);
}
