//! A small XML tree for the mocks: they check a body's exact shape (root element,
//! namespace declarations, element order, `i:nil`), which a JSON view would blur.
//! Parsed with quick-xml directly, not with dirsync's own answer parser, so that a
//! bug there cannot hide a bad request.

use quick_xml::events::Event;

/// One element: its qualified name, attributes, child elements and text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    /// The local name (after any `prefix:`).
    pub fn local(&self) -> &str {
        self.name.rsplit(':').next().unwrap_or(&self.name)
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn child(&self, local: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.local() == local)
    }

    /// Whether the element says it is null: `i:nil="true"` (any prefix).
    pub fn is_nil(&self) -> bool {
        self.attrs
            .iter()
            .any(|(k, v)| (k == "nil" || k.ends_with(":nil")) && v == "true")
    }

    /// The local names of the children, in order.
    pub fn child_names(&self) -> Vec<&str> {
        self.children.iter().map(Element::local).collect()
    }
}

/// Parses a document with exactly one root element, or says why it is not one.
pub fn parse(text: &str) -> Result<Element, String> {
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = vec![Element::default()];
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => stack.push(element(&e)?),
            Event::Empty(e) => {
                let el = element(&e)?;
                stack.last_mut().ok_or("unbalanced")?.children.push(el);
            }
            Event::Text(t) => {
                stack
                    .last_mut()
                    .ok_or("unbalanced")?
                    .text
                    .push_str(&t.xml10_content());
            }
            Event::GeneralRef(r) => {
                let text = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.xml10_content();
                        quick_xml::escape::resolve_xml_entity(&name)
                            .ok_or(format!("unknown entity `&{name};`"))?
                            .to_owned()
                    }
                };
                stack.last_mut().ok_or("unbalanced")?.text.push_str(&text);
            }
            Event::CData(c) => {
                stack
                    .last_mut()
                    .ok_or("unbalanced")?
                    .text
                    .push_str(&c.html_content());
            }
            Event::End(_) => {
                let done = stack.pop().ok_or("unbalanced")?;
                stack.last_mut().ok_or("unbalanced")?.children.push(done);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let mut doc = stack.pop().ok_or("unbalanced")?;
    if !stack.is_empty() {
        return Err("unclosed element".into());
    }
    if !doc.text.trim().is_empty() {
        return Err("text outside the root element".into());
    }
    match doc.children.len() {
        1 => Ok(doc.children.remove(0)),
        n => Err(format!("{n} root elements")),
    }
}

fn element(e: &quick_xml::events::BytesStart<'_>) -> Result<Element, String> {
    let mut attrs = Vec::new();
    for a in e.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        let value = a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| e.to_string())?
            .into_owned();
        attrs.push((a.key.as_ref().to_owned(), value));
    }
    Ok(Element {
        name: e.name().as_ref().to_owned(),
        attrs,
        ..Element::default()
    })
}

/// Escapes text for an XML answer.
pub fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}
