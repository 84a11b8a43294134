//! Link the shim as a position-dependent executable (`-no-pie`).
//!
//! One shim runs per container (per pod under the CRI), all from this one
//! file. Position-independent, every process gets the binary's pointer data
//! (`.data.rel.ro`: vtables, string tables, panic locations — ~400 kB)
//! relocated into private pages, since each is loaded at its own address;
//! position-dependent, those pages come from the file and are shared by every
//! shim on the node. Measured with `scripts/bench density 200`: 343 kB PSS per
//! idle container against 649 kB. The cost is the randomisation of the shim's
//! own image (its heap, stacks and libraries stay randomised), which
//! Debian's containerd, containerd-shim-runc-v2 and runc also do without.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
