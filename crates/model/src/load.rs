//! Reading resources from YAML: strings, files and directories of multi-document files.
//!
//! Each document is read twice: first only its `kind`, then in full as that kind's type,
//! so every error comes from inside the YAML deserializer and names a line and field.

use crate::error::{Diagnostic, LoadError, Location};
use crate::resources::{
    AuthorizationPolicySpec, Document, GrpcRouteSpec, Header, HttpRouteSpec, Kind, MeshSpec,
    Metadata, Resource, ServiceSpec, Spec, SpecKind, TrafficPolicySpec,
};
use std::fs;
use std::path::Path;
use std::sync::Arc;

/// Loads every resource in `text`, a stream of YAML documents separated by `---`.
/// `source` names the input in messages (usually the file name). All problems are
/// reported together; if there is any, nothing is returned.
pub fn load_str(source: &str, text: &str) -> Result<Vec<Resource>, LoadError> {
    let file: Arc<str> = Arc::from(source);
    let mut resources = Vec::new();
    let mut problems = Vec::new();
    for document in split_documents(text) {
        match load_document(&file, &document) {
            Ok(resource) => resources.push(resource),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        Ok(resources)
    } else {
        Err(LoadError::Invalid(problems))
    }
}

/// Loads one file (YAML or JSON).
pub fn load_file(path: &Path) -> Result<Vec<Resource>, LoadError> {
    let text = fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_owned(),
        source,
    })?;
    load_str(&path.display().to_string(), &text)
}

/// Loads every `*.yaml`, `*.yml` and `*.json` file directly in `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Vec<Resource>, LoadError> {
    let io_error = |source| LoadError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        let wanted = path
            .extension()
            .and_then(|ext| ext.to_str())
            .is_some_and(|ext| matches!(ext, "yaml" | "yml" | "json"));
        if wanted && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    let mut resources = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match load_file(&path) {
            Ok(loaded) => resources.extend(loaded),
            Err(LoadError::Invalid(found)) => problems.extend(found),
            Err(io) => return Err(io),
        }
    }
    if problems.is_empty() {
        Ok(resources)
    } else {
        Err(LoadError::Invalid(problems))
    }
}

/// Loads a file, or every resource file in a directory.
pub fn load_path(path: &Path) -> Result<Vec<Resource>, LoadError> {
    if path.is_dir() {
        load_dir(path)
    } else {
        load_file(path)
    }
}

/// One YAML document, padded with blank lines so the parser's line numbers are the
/// file's (and messages, which quote them, need no rewriting).
struct DocumentText {
    padded: String,
    /// The first line with content, where messages about the whole resource point.
    line: usize,
}

fn split_documents(text: &str) -> Vec<DocumentText> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut chunks = Vec::new();
    let (mut start, mut start_line, mut offset) = (0, 0, 0);
    for (index, line) in text.split_inclusive('\n').enumerate() {
        if index > 0 && is_document_start(line) {
            chunks.push((start_line, &text[start..offset]));
            (start, start_line) = (offset, index);
        }
        offset += line.len();
    }
    chunks.push((start_line, &text[start..]));
    chunks
        .into_iter()
        .filter_map(|(start_line, chunk)| {
            let content = chunk.lines().position(has_content)?;
            let mut padded = "\n".repeat(start_line);
            padded.push_str(chunk);
            Some(DocumentText {
                padded,
                line: start_line + content + 1,
            })
        })
        .collect()
}

/// `---` at the start of a line, alone or followed by a space, starts a new document.
fn is_document_start(line: &str) -> bool {
    line.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
}

/// Whether a line holds more than blanks, comments, directives and document markers.
fn has_content(line: &str) -> bool {
    let line = line.trim();
    if line.starts_with('%') {
        return false;
    }
    // Content may follow a marker on its line (`--- {a: 1}`).
    let rest = if is_document_start(line) || line.starts_with("...") {
        line[3..].trim_start()
    } else {
        line
    };
    !rest.is_empty() && !rest.starts_with('#')
}

fn load_document(file: &Arc<str>, document: &DocumentText) -> Result<Resource, Diagnostic> {
    let header: Header = parse(file, document)?;
    let (api_version, metadata, spec) = match header.kind {
        Kind::Mesh => read::<MeshSpec>(file, document)?,
        Kind::Service => read::<ServiceSpec>(file, document)?,
        Kind::HttpRoute => read::<HttpRouteSpec>(file, document)?,
        Kind::GrpcRoute => read::<GrpcRouteSpec>(file, document)?,
        Kind::TrafficPolicy => read::<TrafficPolicySpec>(file, document)?,
        Kind::AuthorizationPolicy => read::<AuthorizationPolicySpec>(file, document)?,
    };
    Ok(Resource {
        api_version,
        metadata,
        spec,
        location: document_location(file, document),
    })
}

fn read<S: SpecKind>(
    file: &Arc<str>,
    document: &DocumentText,
) -> Result<(String, Metadata, Spec), Diagnostic> {
    let parsed: Document<S> = parse(file, document)?;
    let spec = parsed
        .spec
        .or_else(S::when_absent)
        .ok_or_else(|| Diagnostic {
            location: document_location(file, document),
            message: "missing field `spec`".to_owned(),
        })?;
    Ok((parsed.api_version.0, parsed.metadata, spec.into_spec()))
}

fn parse<T: serde::de::DeserializeOwned>(
    file: &Arc<str>,
    document: &DocumentText,
) -> Result<T, Diagnostic> {
    serde_yaml_ng::from_str(&document.padded).map_err(|err| {
        let message = err.to_string();
        match err.location() {
            Some(at) => {
                // The location is ours to print up front; drop the parser's own copy.
                let suffix = format!(" at line {} column {}", at.line(), at.column());
                Diagnostic {
                    location: Location {
                        file: file.clone(),
                        line: at.line(),
                        column: at.column(),
                    },
                    message: message.replacen(&suffix, "", 1),
                }
            }
            None => Diagnostic {
                location: document_location(file, document),
                message,
            },
        }
    })
}

fn document_location(file: &Arc<str>, document: &DocumentText) -> Location {
    Location {
        file: file.clone(),
        line: document.line,
        column: 1,
    }
}

#[cfg(test)]
mod tests;
