//! The evcxr kernel's display protocol, in one place: a value that has an `evcxr_display`
//! method prints its content between two marker lines, and the notebook shows that content
//! as the MIME type named on the first line.

/// Prints `content` for the notebook to show as `mime` (`text/html`, `image/png` with
/// base64 content, `text/plain`).
pub(crate) fn show(mime: &str, content: &str) {
    println!("EVCXR_BEGIN_CONTENT {mime}\n{content}\nEVCXR_END_CONTENT");
}

/// Shows HTML.
pub(crate) fn show_html(html: &str) {
    show("text/html", html);
}
