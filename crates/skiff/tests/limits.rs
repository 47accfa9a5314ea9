//! Limits with the real kubectl: an object past 1.5 MiB is refused with
//! 413 though its request body is allowed; connections that never finish
//! their TLS handshake do not keep the server from answering and are
//! dropped; the data dir and the database are their owner's only.

mod support;

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use support::Cluster;

#[test]
fn objects_connections_and_files_are_bounded() {
    let c = Cluster::start();
    // 2 MiB of data: under the 3 MiB body limit, over the 1.5 MiB object one.
    let big = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata: {{a: \"{}\"}}\n",
        "x".repeat(2 << 20)
    );
    let out = c.kubectl_stdin(&["create", "-f", "-"], &big);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Request entity too large: limit is 1572864"),
        "{err}"
    );
    // Grown past it by a merge patch, in three steps under the body limit.
    c.ok(&["create", "configmap", "grows"]);
    let chunk = "y".repeat(700 << 10);
    let grow = |key: &str| {
        let file = c.dir.path().join(format!("patch-{key}.json"));
        std::fs::write(&file, format!(r#"{{"data":{{"{key}":"{chunk}"}}}}"#)).unwrap();
        let file = file.display().to_string();
        c.kubectl(&[
            "patch",
            "configmap",
            "grows",
            "--type=merge",
            "--patch-file",
            &file,
        ])
    };
    assert!(grow("a").status.success() && grow("b").status.success());
    let out = grow("c");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("too large"), "{err}");

    // Connections that never start TLS.
    let idle: Vec<TcpStream> = (0..256)
        .map(|_| TcpStream::connect(("127.0.0.1", c.port)).unwrap())
        .collect();
    assert_eq!(
        c.ok(&["get", "namespace", "default", "-o", "name"]).trim(),
        "namespace/default"
    );
    for mut conn in idle {
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0u8; 1];
        // The handshake timeout is 10 s: the read ends well before 30 s.
        let read = conn.read(&mut buf);
        assert!(matches!(read, Ok(0)), "closed, not timed out: {read:?}");
    }

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(c.dir.path()), 0o700);
    assert_eq!(mode(&c.dir.path().join("state.db")), 0o600);
}
