//! Compiles proto/*.proto with protox (pure Rust), so no system protoc is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["chat.proto", "mesh.proto", "replica.proto"], ["proto"])?;
    prost_build::Config::new()
        .bytes(["."])
        // Media is rare and large; boxed, it does not grow every message by its size.
        .boxed(".chat.v1.Message.media")
        .boxed(".chat.v1.SendMessage.media")
        .boxed(".chat.v1.SendGroupMessage.media")
        .compile_fds(fds)?;
    Ok(())
}
