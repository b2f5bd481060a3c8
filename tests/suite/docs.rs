//! The user-facing files follow the code: every setting the code reads is documented.

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The environment variable names the settings sections in `src/config/` read (quoted
/// upper-case names outside tests).
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

/// README's layout section names every module and folder of `src/`, so it cannot fall behind a
/// restructuring.
#[test]
fn the_readme_layout_names_every_module() {
    let readme = read("README.md");
    let layout = readme
        .split("## Layout")
        .nth(1)
        .and_then(|rest| rest.split("```").nth(1))
        .expect("README has a Layout section with a code block");
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
            "README's layout does not mention src/{name}"
        );
    }
}
