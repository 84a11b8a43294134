//! `ferrum-mkimage [--name REF] [--busybox PATH] [--nginx TREE] OUT.tar`: writes
//! the busybox test image as an OCI layout tar, ready for `ctr images import
//! OUT.tar` or `docker load -i OUT.tar`; with `--nginx`, the nginx image built
//! from the unpacked tree scripts/install-docker leaves in `$DIR/nginx`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ferrum_tests::image::{busybox_image, nginx_image, DEFAULT_BUSYBOX, DEFAULT_IMAGE, NGINX_IMAGE};

const USAGE: &str = "usage: ferrum-mkimage [--name REF] [--busybox PATH] [--nginx TREE] OUT.tar";

fn main() {
    if let Err(e) = run() {
        eprintln!("ferrum-mkimage: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut name = None;
    let mut busybox = PathBuf::from(DEFAULT_BUSYBOX);
    let mut nginx: Option<PathBuf> = None;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--name" => name = Some(args.next().context(USAGE)?),
            "--nginx" => nginx = Some(args.next().context(USAGE)?.into()),
            "--busybox" => busybox = args.next().context(USAGE)?.into(),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            flag if flag.starts_with('-') => bail!("unknown flag {flag}\n{USAGE}"),
            path if out.is_none() => out = Some(PathBuf::from(path)),
            extra => bail!("unexpected argument {extra}\n{USAGE}"),
        }
    }
    let out = out.context(USAGE)?;
    let name = name.unwrap_or_else(|| if nginx.is_some() { NGINX_IMAGE } else { DEFAULT_IMAGE }.to_string());
    let image = match &nginx {
        Some(tree) => nginx_image(&name, &busybox, tree)?,
        None => busybox_image(&name, &busybox)?,
    };
    image.write_tar(&out)?;
    println!("{} -> {}", name, out.display());
    Ok(())
}
