//! The HTML report: one self-contained page. The [`ReportData`] is embedded once as JSON in a
//! `<script type="application/json">` element, and an inline script (`report.js`) draws the
//! page from it with DOM text nodes, SVG and canvas: no network access, no CDN, and no
//! recorded text is ever parsed as HTML.

use super::ReportData;

const CSS: &str = include_str!("report.css");
const JS: &str = include_str!("report.js");

/// Escapes text for HTML element content and attribute values.
#[must_use]
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Makes JSON text safe inside a `<script>` element: `<`, `>` and `&` become `\u003c`,
/// `\u003e` and `\u0026`, so no `</script>` or `<!--` can appear, and U+2028/U+2029 are
/// escaped for old JavaScript parsers. These characters only occur inside JSON strings, where
/// the escapes mean the same characters.
#[must_use]
pub fn escape_json_for_script(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The page.
#[must_use]
pub fn render(data: &ReportData) -> String {
    let json = serde_json::to_string(data).expect("the report serializes");
    let json = escape_json_for_script(&json);
    let title = escape_html(&format!(
        "poolparty report: {} (run {})",
        data.workflow, data.run
    ));
    let mut page = String::with_capacity(json.len() + CSS.len() + JS.len() + 1024);
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    page.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    page.push_str("<title>");
    page.push_str(&title);
    page.push_str("</title>\n<style>\n");
    page.push_str(CSS);
    page.push_str("</style>\n</head>\n<body data-status=\"loading\">\n<main id=\"app\">\n<h1>");
    page.push_str(&title);
    page.push_str(
        "</h1>\n<noscript><p>This report draws itself with JavaScript; its data is embedded \
         in this file as JSON (element <code>poolparty-data</code>). \
         <code>poolparty report --format text</code> prints the same facts.</p></noscript>\n",
    );
    page.push_str("</main>\n<script type=\"application/json\" id=\"poolparty-data\">");
    page.push_str(&json);
    page.push_str("</script>\n<script>\n");
    page.push_str(JS);
    page.push_str("</script>\n</body>\n</html>\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_cannot_leave_the_script_element() {
        let hostile = "</script><script>alert(1)</script><!-- \u{2028}\u{2029} & >";
        let json = serde_json::to_string(&hostile).unwrap();
        let safe = escape_json_for_script(&json);
        assert!(!safe.contains('<'), "{safe}");
        assert!(!safe.contains('>'), "{safe}");
        assert!(!safe.contains('\u{2028}') && !safe.contains('\u{2029}'));
        let back: String = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, hostile);
    }

    #[test]
    fn html_text_is_escaped() {
        assert_eq!(
            escape_html("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
