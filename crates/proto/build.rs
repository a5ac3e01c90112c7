//! Compiles `proto/switchboard/v1/*.proto` without `protoc`: protox parses them into a descriptor
//! set, tonic-prost-build generates prost messages plus tonic client and server stubs, and
//! pbjson-build generates the canonical protobuf JSON (serde) implementations.
//!
//! It also enforces the invariant the JSON mapping relies on: every `bytes` field in the package
//! is an application payload named `data` or `conn_info`, and no field of another type uses
//! one of those names.

use std::path::PathBuf;

use prost::Message;
use prost_types::field_descriptor_proto::Type;

const PAYLOAD_FIELDS: [&str; 2] = ["data", "conn_info"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.join("../../proto");
    let files = [
        root.join("switchboard/v1/hub.proto"),
        root.join("switchboard/v1/api.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    let fds = protox::compile(&files, [&root])?;
    check_payload_fields(&fds)?;

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_bytes = fds.encode_to_vec();
    std::fs::write(out.join("switchboard_descriptor.bin"), &descriptor_bytes)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;

    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_bytes)?
        .ignore_unknown_fields()
        .build(&[".switchboard.v1"])?;
    Ok(())
}

fn check_payload_fields(fds: &prost_types::FileDescriptorSet) -> Result<(), String> {
    for file in fds.file.iter().filter(|f| f.package() == "switchboard.v1") {
        let mut stack: Vec<&prost_types::DescriptorProto> = file.message_type.iter().collect();
        while let Some(msg) = stack.pop() {
            stack.extend(msg.nested_type.iter());
            for field in &msg.field {
                if is_string_map(msg, field) && field.name() != "tags" {
                    return Err(format!(
                        "{}: field {}.{}: map<string, string> fields must be named \"tags\" (JSON mapping invariant)",
                        file.name(),
                        msg.name(),
                        field.name()
                    ));
                }
                let is_bytes = field.r#type() == Type::Bytes;
                let is_payload_name = PAYLOAD_FIELDS.contains(&field.name());
                if is_bytes != is_payload_name {
                    return Err(format!(
                        "{}: field {}.{}: bytes fields must be payloads named {:?} (JSON mapping invariant)",
                        file.name(),
                        msg.name(),
                        field.name(),
                        PAYLOAD_FIELDS
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Whether `field` of `msg` is a `map<_, string>` (a repeated field of a nested map-entry type
/// whose value is a string).
fn is_string_map(
    msg: &prost_types::DescriptorProto,
    field: &prost_types::FieldDescriptorProto,
) -> bool {
    let Some(entry_name) = field
        .type_name
        .as_deref()
        .and_then(|t| t.rsplit('.').next())
    else {
        return false;
    };
    msg.nested_type.iter().any(|n| {
        n.name() == entry_name
            && n.options.as_ref().is_some_and(|o| o.map_entry())
            && n.field
                .iter()
                .any(|f| f.name() == "value" && f.r#type() == Type::String)
    })
}
