//! The user-facing files follow the code: every setting the code reads is documented.

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The environment variable names the settings sections in `src/config/` read (quoted
/// upper-case names outside tests), and the schedule settings the periodic jobs declare.
fn settings_in_code() -> Vec<String> {
    let dir = format!("{}/src/config", env!("CARGO_MANIFEST_DIR"));
    let mut code = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let source = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        code.push_str(source.split("#[cfg(test)]").next().unwrap());
    }
    let mut names: Vec<String> = code
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.len() > 2
                && s.chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
        })
        .filter(|s| s.contains('_') || ["HOST", "PORT", "ENVIRONMENT"].contains(s))
        .map(str::to_string)
        .collect();
    // The periodic jobs declare their schedule settings beside their handlers.
    names.extend(
        keel::app::kinds()
            .into_iter()
            .filter_map(|k| k.schedule.map(|s| s.setting.to_string())),
    );
    names.sort();
    names.dedup();
    names
}

#[test]
fn env_example_lists_every_setting() {
    let example = read(".env.example");
    let names = settings_in_code();
    assert!(names.len() > 20, "found only {names:?}");
    for name in names {
        let listed = example
            .lines()
            .any(|l| l.trim_start_matches("# ").starts_with(&format!("{name}=")));
        assert!(listed, ".env.example does not list {name}");
    }
}

#[test]
fn readme_shows_the_two_commands() {
    let readme = read("README.md");
    assert!(readme.contains("cargo run --bin server"));
    assert!(readme.contains("tests/run.sh"));
    let ci = read(".ci/run");
    assert!(
        ci.contains("tests/run.sh"),
        ".ci/run must call the README's test command"
    );
}

/// The layout page names every module and folder of `src/`, so it cannot fall behind a
/// restructuring.
#[test]
fn the_layout_names_every_module() {
    let page = read("docs/layout.md");
    let layout = page
        .split("## Layout")
        .nth(1)
        .and_then(|rest| rest.split("```").nth(1))
        .expect("docs/layout.md has a Layout section with a code block");
    let words: std::collections::HashSet<&str> = layout
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    let src = format!("{}/src", env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        if name == "lib" {
            continue;
        }
        assert!(
            words.contains(name.as_str()),
            "docs/layout.md does not mention src/{name}"
        );
    }
}

/// The README stays short and leads to every page of `docs/`; every relative link of the README
/// and the pages reaches a file that exists.
#[test]
fn the_readme_is_short_and_every_page_is_linked() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = read("README.md");
    let lines = readme.lines().count();
    assert!(lines < 250, "README.md has {lines} lines");
    let mut pages: Vec<String> = std::fs::read_dir(format!("{root}/docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".md"))
        .collect();
    pages.sort();
    assert!(pages.contains(&"extending.md".to_string()), "{pages:?}");
    for page in &pages {
        assert!(
            readme.contains(&format!("](docs/{page})")),
            "README.md does not link docs/{page}"
        );
    }
    let documents = std::iter::once(("README.md".to_string(), root.to_string())).chain(
        pages
            .iter()
            .map(|p| (format!("docs/{p}"), format!("{root}/docs"))),
    );
    for (document, base) in documents {
        let text = read(&document);
        for target in text
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split(')').next())
        {
            let path = target.split('#').next().unwrap_or_default();
            if path.is_empty() || path.contains("://") || path.starts_with("mailto:") {
                continue;
            }
            assert!(
                std::path::Path::new(&format!("{base}/{path}")).exists(),
                "{document} links {target}, which does not exist"
            );
        }
    }
}
