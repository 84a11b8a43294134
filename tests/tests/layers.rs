//! Layered images through containerd -> ferrum-snapshotter -> ferrum's shim:
//! whiteouts, opaque directories, and more layers than one mount(2) call takes.

use std::time::Duration;

use ferrum_tests::image::{busybox_layer, ImageBuilder, Layer};
use ferrum_tests::Env;

const GRACE: Duration = Duration::from_secs(5);

fn run(env: &Env, image: &str, script: &str) -> ferrum_tests::CtrOutput {
    env.run_on_ferrum(&["--rm"], image, "c1", &["sh", "-c", script])
}

#[test]
fn deletes_opaque_dirs_and_modes_across_layers() {
    let env = Env::start().expect("starting containerd with ferrum");
    let name = "docker.io/library/layers:test";
    let image = ImageBuilder::new(name)
        .layer(busybox_layer(env.busybox_path()).unwrap())
        .layer(Layer::new().dir("data", 0o755).file("data/gone", "1", 0o644).file("data/kept", "2", 0o600))
        .layer(Layer::new().dir("opq", 0o755).file("opq/old", "x", 0o644))
        .layer(Layer::new().whiteout("data/gone").opaque("opq").file("opq/new", "y", 0o644));
    env.import_image("layers", &image).unwrap();
    let out = run(&env, name, "ls /data; ls /opq; stat -c %a /data/kept");
    out.assert_ok();
    assert_eq!(out.stdout, "kept\nnew\n600\n", "{out}");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

#[test]
fn an_image_of_130_layers_runs() {
    let env = Env::start().expect("starting containerd with ferrum");
    let name = "docker.io/library/deep:test";
    let mut image = ImageBuilder::new(name).layer(busybox_layer(env.busybox_path()).unwrap());
    for i in 0..130 {
        image = image.layer(Layer::new().dir("l", 0o755).file(&format!("l/{i}"), format!("{i}\n"), 0o644));
    }
    env.import_image("deep", &image).unwrap();
    let out = run(&env, name, "ls /l | wc -l; cat /l/0 /l/129");
    out.assert_ok();
    assert_eq!(out.stdout.split_whitespace().collect::<Vec<_>>(), ["130", "0", "129"], "{out}");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}
