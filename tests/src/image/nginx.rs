//! The nginx image of the Docker tests, with no registry: busybox plus
//! Debian's nginx as scripts/install-docker unpacks it (the `nginx` and
//! `nginx-common` packages and the libraries nginx links, the C library among
//! them: the busybox image has none), and a configuration of our own that
//! keeps nginx in the foreground, logs to the container's stdout and stderr,
//! and serves the package's welcome page on port 80.

use std::path::Path;

use anyhow::{Context, Result};

use super::{busybox_layer, ImageBuilder, Layer};

/// The reference the nginx image is built under.
pub const NGINX_IMAGE: &str = "docker.io/library/nginx:local";

/// What the package's welcome page says (usr/share/nginx/html/index.html).
pub const NGINX_WELCOME: &str = "Welcome to nginx!";

/// `user`: the busybox image's passwd and group have `nobody` (nginx's
/// default group, Debian's `nogroup`, is not there).
const CONF: &str = "daemon off;
user nobody nobody;
worker_processes 1;
error_log stderr notice;
pid /run/nginx.pid;
events { worker_connections 64; }
http {
    include /etc/nginx/mime.types;
    access_log /dev/stdout;
    server {
        listen 80;
        root /usr/share/nginx/html;
    }
}
";

/// What of the unpacked packages an nginx in a container does not use:
/// documentation, service files, the C library's charset converters, and the
/// packaged configuration, which ours replaces.
const SKIP: &[&str] = &[
    "usr/share/doc",
    "usr/share/man",
    "usr/share/lintian",
    "usr/share/vim",
    "usr/share/apport",
    "usr/lib/systemd",
    "usr/lib/x86_64-linux-gnu/gconv",
    "etc/init.d",
    "etc/default",
    "etc/logrotate.d",
    "etc/ufw",
    "etc/nginx/nginx.conf",
];

/// busybox, then the nginx tree `tree` (scripts/install-docker's
/// `$FERRUM_DOCKER_DIR/nginx`), running `nginx` in the foreground.
pub fn nginx_image(name: &str, busybox: &Path, tree: &Path) -> Result<ImageBuilder> {
    let skip = |relative: &Path| SKIP.iter().any(|s| relative == Path::new(s));
    let nginx = Layer::new()
        .tree(tree, "", &skip)
        .with_context(|| format!("reading the nginx tree {}", tree.display()))?
        // Debian's binaries name /lib64/ld-linux-x86-64.so.2 and search /lib:
        // merged /usr, as a Debian root has it.
        .symlink("lib", "usr/lib")
        .symlink("lib64", "usr/lib64")
        .file("etc/nginx/nginx.conf", CONF, 0o644);
    Ok(ImageBuilder::new(name)
        .layer(busybox_layer(busybox)?)
        .layer(nginx)
        .cmd(&["/usr/sbin/nginx"]))
}
