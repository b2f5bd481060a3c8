//! The pages the mailed links open: what each says is its `page_<name>.txt` (`Title:`,
//! `Button:` and `Done:` lines, a blank line, the lead paragraph, with `project` and
//! `grace_days`), its HTML `link_page.html`, auto-escaped like the mails.

use minijinja::{ErrorKind, context};

use super::{LinkPage, Mails};

impl Mails {
    /// One of the pages the mailed links open: its wording from `page_<name>.txt`, its HTML
    /// from `link_page.html`.
    pub fn link_page(&self, page: LinkPage<'_>) -> String {
        self.render_link_page(page).unwrap_or_else(|(file, e)| {
            tracing::error!(template = %file, error = %e, "page template failed; serving the built-in one");
            Self::built_in(&self.project)
                .render_link_page(page)
                .unwrap_or_else(|(file, e)| panic!("built-in {file}: {e}"))
        })
    }

    /// The page, or the file that failed.
    pub(super) fn render_link_page(
        &self,
        page: LinkPage<'_>,
    ) -> Result<String, (String, minijinja::Error)> {
        let LinkPage {
            name,
            prefix,
            endpoint,
            password,
            danger,
            grace_days,
        } = page;
        let project = self.project.as_str();
        let txt = format!("page_{name}.txt");
        let wording = self
            .templates
            .get_template(&txt)
            .and_then(|t| t.render(context! { project, grace_days }))
            .map_err(|e| (txt.clone(), e))?;
        let Some(Wording {
            title,
            button,
            done,
            lead,
        }) = Wording::parse(&wording)
        else {
            let e = minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "must start with `Title:`, `Button:` and `Done:` lines and a blank line",
            );
            return Err((txt, e));
        };
        self.templates
            .get_template("link_page.html")
            .and_then(|t| {
                t.render(context! {
                    project, prefix, title, lead, button, endpoint, done, password, danger,
                })
            })
            .map_err(|e| ("link_page.html".to_string(), e))
    }
}

/// What a link page says, from its `page_<name>.txt`.
struct Wording {
    title: String,
    button: String,
    done: String,
    /// The paragraph after the blank line, its lines joined.
    lead: String,
}

impl Wording {
    fn parse(rendered: &str) -> Option<Self> {
        let mut lines = rendered.lines();
        let mut field = |name: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let (title, button, done) = (field("Title:")?, field("Button:")?, field("Done:")?);
        if !lines.next()?.trim().is_empty() {
            return None;
        }
        let lead = lines
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Some(Self {
            title,
            button,
            done,
            lead,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_says_what_its_template_says_escaped() {
        let page = Mails::built_in("Keel").link_page(LinkPage {
            name: "confirm_deletion",
            prefix: "/api",
            endpoint: "/auth/confirm-deletion",
            password: false,
            danger: true,
            grace_days: 12,
        });
        assert!(
            page.contains("<title>Delete your account · Keel</title>"),
            "{page}"
        );
        assert!(
            page.contains("permanent deletion in 12 days. Until then"),
            "{page}"
        );
        assert!(page.contains("data-endpoint=\"/auth/confirm-deletion\""));
        assert!(page.contains("class=\"danger\">Delete my account</button>"));
        assert!(page.contains("data-done=\"Your account is scheduled for deletion."));
    }

    #[test]
    fn wording_needs_its_three_lines_and_a_blank_one() {
        let w = Wording::parse("Title: T\nButton: B\nDone: D\n\nOne\ntwo.\n").unwrap();
        assert_eq!(
            (w.title, w.button, w.done, w.lead),
            ("T".into(), "B".into(), "D".into(), "One two.".into())
        );
        assert!(Wording::parse("Title: T\nDone: D\n\nx").is_none());
        assert!(Wording::parse("Title: T\nButton: B\nDone: D\nx").is_none());
    }
}
