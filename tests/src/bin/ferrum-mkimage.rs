//! `ferrum-mkimage [--name REF] [--busybox PATH] OUT.tar`: writes the busybox test
//! image as an OCI layout tar, ready for `ctr images import OUT.tar`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use ferrum_tests::image::{busybox_image, DEFAULT_BUSYBOX, DEFAULT_IMAGE};

const USAGE: &str = "usage: ferrum-mkimage [--name REF] [--busybox PATH] OUT.tar";

fn main() {
    if let Err(e) = run() {
        eprintln!("ferrum-mkimage: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut name = DEFAULT_IMAGE.to_string();
    let mut busybox = PathBuf::from(DEFAULT_BUSYBOX);
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--name" => name = args.next().context(USAGE)?,
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
    busybox_image(&name, &busybox)?.write_tar(&out)?;
    println!("{} -> {}", name, out.display());
    Ok(())
}
