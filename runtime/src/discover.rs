//! Finding plugins on disk: every directory (at any depth below the given roots) holding a
//! `plugin.toml` is a plugin. All manifests are validated before anything starts, and every
//! problem is reported at once: bad manifests, missing components, two plugins claiming one agent
//! type.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::manifest::{Manifest, ManifestError};

/// The manifest file name.
pub const MANIFEST: &str = "plugin.toml";

/// A plugin found on disk, with a valid manifest.
#[derive(Debug, Clone)]
pub struct FoundPlugin {
    /// The manifest file.
    pub manifest_path: PathBuf,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The component file the manifest names (it may not exist yet, see [`check_components`]).
    pub component_path: PathBuf,
}

/// Finds and validates every plugin below `roots`. A root may also be a manifest file or a
/// plugin directory itself.
pub fn discover(roots: &[PathBuf]) -> Result<Vec<FoundPlugin>, Vec<ManifestError>> {
    let mut manifests = Vec::new();
    let mut errors = Vec::new();
    for root in roots {
        if !root.exists() {
            errors.push(ManifestError {
                file: root.clone(),
                key: "<path>".into(),
                problem: "does not exist".into(),
                fix: "pass a directory that contains plugins (folders with a plugin.toml)".into(),
            });
        } else if root.is_file() {
            manifests.push(root.clone());
        } else {
            let before = manifests.len();
            walk(root, &mut manifests);
            if manifests.len() == before {
                errors.push(ManifestError {
                    file: root.clone(),
                    key: "<path>".into(),
                    problem: format!("contains no `{MANIFEST}`"),
                    fix: "create a plugin with `warren new NAME`, or point at the right directory"
                        .into(),
                });
            }
        }
    }
    manifests.sort();
    manifests.dedup();
    let mut found = Vec::new();
    for path in manifests {
        match Manifest::load(&path) {
            Ok(manifest) => {
                let component_path = manifest.component_path(&path);
                found.push(FoundPlugin {
                    manifest_path: path,
                    manifest,
                    component_path,
                });
            }
            Err(e) => errors.extend(e),
        }
    }
    let mut owners: HashMap<String, &Path> = HashMap::new();
    for p in &found {
        if let Some(first) = owners.insert(p.manifest.agent.agent_type.clone(), &p.manifest_path) {
            errors.push(ManifestError {
                file: p.manifest_path.clone(),
                key: "agent.type".into(),
                problem: format!(
                    "agent type `{}` is also claimed by {}",
                    p.manifest.agent.agent_type,
                    first.display()
                ),
                fix: "give each plugin its own agent type".into(),
            });
        }
    }
    if errors.is_empty() {
        Ok(found)
    } else {
        Err(errors)
    }
}

/// Reports plugins whose component file does not exist.
pub fn check_components(found: &[FoundPlugin]) -> Vec<ManifestError> {
    found
        .iter()
        .filter(|p| !p.component_path.exists())
        .map(|p| ManifestError {
            file: p.manifest_path.clone(),
            key: "agent.component".into(),
            problem: format!("{} does not exist", p.component_path.display()),
            fix: format!(
                "build it with `warren build {}`",
                p.manifest_path.parent().unwrap_or(Path::new(".")).display()
            ),
        })
        .collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let manifest = dir.join(MANIFEST);
    if manifest.is_file() {
        out.push(manifest);
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n != "target" && !n.to_string_lossy().starts_with('.'))
        })
        .collect();
    dirs.sort();
    for d in dirs {
        walk(&d, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("warren-discover-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn plugin(root: &Path, dir: &str, text: &str) {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(MANIFEST), text).unwrap();
    }

    #[test]
    fn finds_nested_plugins_and_reports_every_problem() {
        let root = tmp("all");
        plugin(
            &root,
            "a",
            "[agent]\ntype = \"a\"\ncomponent = \"a.wasm\"\n",
        );
        plugin(
            &root,
            "group/b",
            "[agent]\ntype = \"a\"\ncomponent = \"b.wasm\"\n",
        );
        plugin(
            &root,
            "c",
            "[agent]\ntype = \"c\"\ncomponent = \"c.wasm\"\nbogus = 1\n",
        );
        let errors = discover(&[root.clone(), root.join("missing")]).unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 3, "{text:#?}");
        assert!(
            text.iter()
                .any(|t| t.contains("missing") && t.contains("does not exist"))
        );
        assert!(text.iter().any(|t| t.contains("bogus")));
        assert!(text.iter().any(|t| t.contains("also claimed by")));
    }

    #[test]
    fn missing_components_say_how_to_build_them() {
        let root = tmp("comp");
        plugin(
            &root,
            "a",
            "[agent]\ntype = \"a\"\ncomponent = \"a.wasm\"\n",
        );
        let found = discover(std::slice::from_ref(&root)).unwrap();
        let errors = check_components(&found);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].fix.contains("warren build"), "{}", errors[0]);
    }
}
