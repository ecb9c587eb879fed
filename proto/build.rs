//! Compiles `cri_image.proto` with protox, so building needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["cri_image.proto"], ["."])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=cri_image.proto");
    Ok(())
}
