//! Encoder backends as data: the element chains in `pipelines/*.toml`.
//!
//! A backend file lists the elements that decode the source, scale a rung
//! and encode it, with properties in GStreamer's string syntax. Placeholders
//! such as `{width}` are filled from typed values ([`RungValues`]), never
//! from strings a user sent, so no stream name or key can reach a pipeline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gst::prelude::*;
use serde::Deserialize;

use super::TranscodeError;

/// The backend shipped inside the binary, used when `pipelines/` has no
/// file for the configured encoder named `x264`.
const BUILTIN_X264: &str = include_str!("../../pipelines/x264.toml");

/// Placeholders a backend may use.
const PLACEHOLDERS: &[&str] = &[
    "width",
    "height",
    "bitrate_kbps",
    "bitrate_bps",
    "vbv_kbits",
    "keyint_max_frames",
    "x264_preset",
];

/// One element in a chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElementSpec {
    pub factory: String,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// Whether a backend runs on the CPU or on a device that may be missing,
/// busy or fail at run time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    #[default]
    Software,
    Hardware,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Software => "software",
            Self::Hardware => "hardware",
        }
    }
}

/// A loaded backend description.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub source: PathBuf,
    pub description: String,
    /// Software backends are the fallback for hardware ones.
    #[serde(default)]
    pub kind: BackendKind,
    /// The Debian packages or drivers that provide the elements.
    #[serde(default)]
    pub packages: String,
    /// Scale each rung from the next larger rung's picture rather than from
    /// the decoded source: each step is smaller, so a CPU scaler does less
    /// work (and a 2-tap filter aliases less). The scale chain must accept
    /// its own output.
    #[serde(default)]
    pub cascade_scaling: bool,
    pub decode: Vec<ElementSpec>,
    pub scale: Vec<ElementSpec>,
    pub encode: Vec<ElementSpec>,
}

/// The typed values a rung's chains are filled with.
#[derive(Debug, Clone, PartialEq)]
pub struct RungValues {
    pub width: u32,
    pub height: u32,
    pub bitrate_kbps: u32,
    pub keyint_max_frames: u32,
    pub x264_preset: String,
}

impl RungValues {
    fn lookup(&self, name: &str) -> Option<String> {
        Some(match name {
            "width" => self.width.to_string(),
            "height" => self.height.to_string(),
            "bitrate_kbps" => self.bitrate_kbps.to_string(),
            "bitrate_bps" => (u64::from(self.bitrate_kbps) * 1000).to_string(),
            "vbv_kbits" => self.bitrate_kbps.to_string(),
            "keyint_max_frames" => self.keyint_max_frames.to_string(),
            "x264_preset" => self.x264_preset.clone(),
            _ => return None,
        })
    }
}

impl Backend {
    /// Whether `{dir}/{name}.toml` exists (or is built in).
    pub fn exists(dir: &Path, name: &str) -> bool {
        name == "x264" || dir.join(format!("{name}.toml")).is_file()
    }

    /// Loads `{dir}/{name}.toml`, falling back to the built-in x264 backend.
    pub fn load(dir: &Path, name: &str) -> Result<Self, TranscodeError> {
        let path = dir.join(format!("{name}.toml"));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && name == "x264" => {
                BUILTIN_X264.to_string()
            }
            Err(source) => return Err(TranscodeError::BackendRead { path, source }),
        };
        Self::parse(&text, name, &path)
    }

    /// Parses backend text and checks its placeholders.
    pub fn parse(text: &str, name: &str, path: &Path) -> Result<Self, TranscodeError> {
        let mut backend: Backend =
            toml::from_str(text).map_err(|e| TranscodeError::BackendParse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        backend.name = name.to_string();
        backend.source = path.to_path_buf();
        if backend.decode.is_empty() || backend.encode.is_empty() {
            return Err(TranscodeError::BackendParse {
                path: path.to_path_buf(),
                message: "`decode` and `encode` need at least one element each".into(),
            });
        }
        for spec in backend.all_elements() {
            for value in spec.properties.values() {
                for placeholder in placeholders_in(value) {
                    if !PLACEHOLDERS.contains(&placeholder) {
                        return Err(TranscodeError::BackendParse {
                            path: path.to_path_buf(),
                            message: format!(
                                "element `{}` uses unknown placeholder `{{{placeholder}}}`",
                                spec.factory
                            ),
                        });
                    }
                }
            }
        }
        Ok(backend)
    }

    /// Every element the backend uses, in order.
    pub fn all_elements(&self) -> impl Iterator<Item = &ElementSpec> {
        self.decode.iter().chain(&self.scale).chain(&self.encode)
    }

    /// Element factories this backend needs that this box does not have.
    pub fn missing_elements(&self) -> Vec<String> {
        let mut missing: Vec<String> = self
            .all_elements()
            .map(|s| s.factory.clone())
            .chain(
                super::pipeline::FIXED_ELEMENTS
                    .iter()
                    .map(|s| s.to_string()),
            )
            .filter(|f| gst::ElementFactory::find(f).is_none())
            .collect();
        missing.sort();
        missing.dedup();
        missing
    }
}

/// Names inside `{...}` in a property value.
fn placeholders_in(value: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = value;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        found.push(&after[..close]);
        rest = &after[close + 1..];
    }
    found
}

/// Fills a property value's placeholders.
fn fill(value: &str, values: Option<&RungValues>) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        let name = &after[..close];
        match values.and_then(|v| v.lookup(name)) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[open..open + close + 2]),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Builds the elements of a chain with their properties set.
pub fn build_chain(
    specs: &[ElementSpec],
    values: Option<&RungValues>,
) -> Result<Vec<gst::Element>, TranscodeError> {
    specs
        .iter()
        .map(|spec| {
            let element = gst::ElementFactory::make(&spec.factory)
                .build()
                .map_err(|_| TranscodeError::MissingElement(spec.factory.clone()))?;
            for (key, raw) in &spec.properties {
                let value = fill(raw, values);
                if element.find_property(key).is_none() {
                    return Err(TranscodeError::BadProperty {
                        element: spec.factory.clone(),
                        property: key.clone(),
                        message: "no such property".into(),
                    });
                }
                set_property_checked(&element, key, &value).map_err(|message| {
                    TranscodeError::BadProperty {
                        element: spec.factory.clone(),
                        property: key.clone(),
                        message,
                    }
                })?;
            }
            Ok(element)
        })
        .collect()
}

/// Sets a property from a string without GLib's panic on bad values.
fn set_property_checked(element: &gst::Element, key: &str, value: &str) -> Result<(), String> {
    let pspec = element
        .find_property(key)
        .ok_or_else(|| "no such property".to_string())?;
    let parsed = gst::glib::Value::deserialize(value, pspec.value_type())
        .map_err(|_| format!("`{value}` is not a valid {}", pspec.value_type().name()))?;
    if !pspec.flags().contains(gst::glib::ParamFlags::WRITABLE) || !pspec.value_is_valid(&parsed) {
        return Err(format!(
            "`{value}` is out of range or the property is read-only"
        ));
    }
    element.set_property_from_value(key, &parsed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> RungValues {
        RungValues {
            width: 640,
            height: 360,
            bitrate_kbps: 800,
            keyint_max_frames: 120,
            x264_preset: "veryfast".into(),
        }
    }

    #[test]
    fn fills_typed_placeholders() {
        let text = "video/x-raw,width={width},height={height}";
        assert_eq!(
            fill(text, Some(&values())),
            "video/x-raw,width=640,height=360"
        );
        assert_eq!(fill("{bitrate_kbps}", Some(&values())), "800");
        assert_eq!(fill("{bitrate_bps}", Some(&values())), "800000");
        assert_eq!(fill("no braces", Some(&values())), "no braces");
    }

    #[test]
    fn unknown_placeholder_is_refused() {
        let text = "description = \"x\"\n[[decode]]\nfactory = \"a\"\n\
                    [[scale]]\nfactory = \"b\"\n\
                    [[encode]]\nfactory = \"c\"\nproperties = { p = \"{stream_name}\" }\n";
        let err = Backend::parse(text, "t", Path::new("t.toml")).expect_err("refused");
        assert!(err.to_string().contains("stream_name"), "{err}");
    }

    #[test]
    fn shipped_backends_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("pipelines dir") {
            let path = entry.expect("entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let name = path.file_stem().and_then(|s| s.to_str()).expect("name");
            let backend = Backend::load(&dir, name).expect("parses");
            assert!(!backend.encode.is_empty(), "{name}: no encode chain");
            assert!(!backend.scale.is_empty(), "{name}: no scale chain");
            assert!(!backend.packages.is_empty(), "{name}: no `packages`");
            let expected = if ["x264", "openh264"].contains(&name) {
                BackendKind::Software
            } else {
                BackendKind::Hardware
            };
            assert_eq!(backend.kind, expected, "{name}: kind");
            // Every backend sizes, rate-controls and profiles its output
            // from typed values, never from fixed numbers.
            let props: Vec<&str> = backend
                .all_elements()
                .flat_map(|e| e.properties.values())
                .map(String::as_str)
                .collect();
            for needed in ["{width}", "{height}", "{keyint_max_frames}"] {
                assert!(
                    props.iter().any(|p| p.contains(needed)),
                    "{name}: nothing uses {needed}"
                );
            }
            assert!(
                props.iter().any(|p| p.contains("{bitrate_")),
                "{name}: no bitrate placeholder"
            );
            assert!(
                props.iter().any(|p| p.contains("video/x-h264,profile=")),
                "{name}: no profile pinned"
            );
            names.push(name.to_string());
        }
        names.sort();
        assert_eq!(names, ["nvenc", "openh264", "qsv", "va", "x264"]);
    }

    #[test]
    fn kind_defaults_to_software_and_rejects_others() {
        let base = "description = \"x\"\n[[decode]]\nfactory = \"a\"\n\
                    [[scale]]\nfactory = \"b\"\n[[encode]]\nfactory = \"c\"\n";
        let backend = Backend::parse(base, "t", Path::new("t.toml")).expect("parses");
        assert_eq!(backend.kind, BackendKind::Software);
        let text = format!("kind = \"gpu\"\n{base}");
        let err = Backend::parse(&text, "t", Path::new("t.toml")).expect_err("refused");
        assert!(err.to_string().contains("kind"), "{err}");
    }
}
