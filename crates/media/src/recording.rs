//! Call recording: both directions into one stereo 16-bit WAV, caller on the left
//! channel, agent on the right.
//!
//! The pipeline hands over one frame of each direction per ptime tick (both at the
//! codec's PCM rate), so the channels stay aligned without timestamps. Writes go
//! through a 64 KiB `BufWriter`: a page-cache write about every second at 8 kHz,
//! no allocation per frame.

use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::Path;

use hound::{SampleFormat, WavSpec, WavWriter};

use crate::MediaError;

/// Stereo WAV writer of one call.
pub struct Recorder<W: Write + Seek = BufWriter<File>> {
    writer: WavWriter<W>,
    rate_hz: u32,
    frames: u64,
}

impl<W: Write + Seek> std::fmt::Debug for Recorder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("rate_hz", &self.rate_hz)
            .field("frames", &self.frames)
            .finish()
    }
}

fn spec(rate_hz: u32) -> WavSpec {
    WavSpec {
        channels: 2,
        sample_rate: rate_hz,
        bits_per_sample: 16,
        sample_format: SampleFormat::Int,
    }
}

impl Recorder<BufWriter<File>> {
    /// Creates (truncates) the WAV file at `path`.
    pub fn create(path: &Path, rate_hz: u32) -> Result<Self, MediaError> {
        let file = BufWriter::with_capacity(64 * 1024, File::create(path)?);
        Self::new(file, rate_hz)
    }
}

impl<W: Write + Seek> Recorder<W> {
    /// Writes a WAV header to `writer`.
    pub fn new(writer: W, rate_hz: u32) -> Result<Self, MediaError> {
        Ok(Self {
            writer: WavWriter::new(writer, spec(rate_hz))?,
            rate_hz,
            frames: 0,
        })
    }

    /// Sample rate of the file.
    pub fn rate_hz(&self) -> u32 {
        self.rate_hz
    }

    /// Sample frames (stereo pairs) written.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Appends one block: `caller` to the left channel, `agent` to the right; the
    /// shorter side is padded with silence.
    pub fn write(&mut self, caller: &[i16], agent: &[i16]) -> Result<(), MediaError> {
        let n = caller.len().max(agent.len());
        let mut w = self.writer.get_i16_writer(2 * n as u32);
        for i in 0..n {
            w.write_sample(caller.get(i).copied().unwrap_or(0));
            w.write_sample(agent.get(i).copied().unwrap_or(0));
        }
        w.flush()?;
        self.frames += n as u64;
        Ok(())
    }

    /// Fixes up the header and flushes.
    pub fn finalize(self) -> Result<(), MediaError> {
        self.writer.finalize()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stereo_caller_left_agent_right() {
        let dir = std::env::temp_dir().join(format!("vg-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("call.wav");
        let mut r = Recorder::create(&path, 8000).unwrap();
        for _ in 0..50 {
            r.write(&[100; 160], &[-200; 160]).unwrap();
        }
        r.write(&[1; 10], &[2; 5]).unwrap();
        assert_eq!(r.frames(), 50 * 160 + 10);
        r.finalize().unwrap();
        let mut rd = hound::WavReader::open(&path).unwrap();
        let spec = rd.spec();
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (2, 8000, 16)
        );
        let s: Vec<i16> = rd.samples::<i16>().map(|x| x.unwrap()).collect();
        assert_eq!(s.len(), 2 * (50 * 160 + 10));
        assert_eq!(&s[..4], &[100, -200, 100, -200]);
        assert_eq!(&s[s.len() - 2..], &[1, 0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
