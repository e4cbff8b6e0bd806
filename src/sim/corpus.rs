//! The simulated knowledge base: a small fixed corpus of articles and the
//! content types they belong to, so that lists, filters and searches give
//! meaningful, deterministic answers.
//!
//! Two content types, as in Oracle's samples: `FAQ` (body `<FAQ><QUESTION>`
//! `<ANSWER>`, what the Digital Assistant sample's FAQ renderer reads) and
//! `SOLUTIONS` (body `<SOLUTIONS><TITLE><DESCRIPTION>`, what its default
//! renderer reads: the first child's CDATA). Two articles are for staff only
//! (console users, `ACCOUNT`), standing in for Oracle's user-group
//! restrictions.

/// A content type (Oracle's `ContentType` key).
#[derive(Debug)]
pub(crate) struct ContentType {
    pub(crate) record_id: &'static str,
    pub(crate) reference_key: &'static str,
    pub(crate) name: &'static str,
}

/// One published article, in its one locale (`en_US`).
#[derive(Debug)]
pub(crate) struct Article {
    pub(crate) record_id: &'static str,
    pub(crate) version_id: &'static str,
    pub(crate) document_id: &'static str,
    pub(crate) answer_id: u64,
    pub(crate) version: &'static str,
    pub(crate) title: &'static str,
    pub(crate) content_type: &'static ContentType,
    /// The short answer (FAQ) or description (SOLUTIONS), plain text.
    pub(crate) body: &'static str,
    pub(crate) publish_date: &'static str,
    pub(crate) date_modified: &'static str,
    /// Visible to console users (`ACCOUNT`) only.
    pub(crate) staff_only: bool,
}

pub(crate) const LOCALE: &str = "en_US";

pub(crate) static FAQ: ContentType = ContentType {
    record_id: "0120944D47F56401535D3A08D2007E80",
    reference_key: "FAQ",
    name: "FAQ",
};

pub(crate) static SOLUTIONS: ContentType = ContentType {
    record_id: "0120944D47F56401535D3A08D2007E81",
    reference_key: "SOLUTIONS",
    name: "Solutions",
};

pub(crate) static CONTENT_TYPES: [&ContentType; 2] = [&FAQ, &SOLUTIONS];

const fn article(
    n: u8,
    document_id: &'static str,
    answer_id: u64,
    content_type: &'static ContentType,
    title: &'static str,
    body: &'static str,
    dates: (&'static str, &'static str),
) -> Article {
    Article {
        record_id: RECORD_IDS[n as usize],
        version_id: VERSION_IDS[n as usize],
        document_id,
        answer_id,
        version: "1.0",
        title,
        content_type,
        body,
        publish_date: dates.0,
        date_modified: dates.1,
        staff_only: false,
    }
}

const RECORD_IDS: [&str; 10] = [
    "048016517AB56EF014519740375005599",
    "048016517AB56EF014519740375005600",
    "048016517AB56EF014519740375005601",
    "048016517AB56EF014519740375005602",
    "048016517AB56EF014519740375005603",
    "048016517AB56EF014519740375005604",
    "048016517AB56EF014519740375005605",
    "048016517AB56EF014519740375005606",
    "048016517AB56EF014519740375005607",
    "048016517AB56EF014519740375005608",
];

const VERSION_IDS: [&str; 10] = [
    "048016517AB56EF014519740375007701",
    "048016517AB56EF014519740375007702",
    "048016517AB56EF014519740375007703",
    "048016517AB56EF014519740375007704",
    "048016517AB56EF014519740375007705",
    "048016517AB56EF014519740375007706",
    "048016517AB56EF014519740375007707",
    "048016517AB56EF014519740375007708",
    "048016517AB56EF014519740375007709",
    "048016517AB56EF014519740375007710",
];

/// The articles, in `answerId` order.
pub(crate) static ARTICLES: [Article; 10] = [
    article(0, "OR4", 1000077, &SOLUTIONS, "Registration Now Open to the Public for Oracle OpenWorld",
        "Registration for Oracle OpenWorld is now open to the public on the event site.",
        ("2023-09-01T08:00:00+0000", "2023-09-01T08:00:00+0000")),
    article(1, "FAQ12", 1000078, &FAQ, "How do I reset my password?",
        "Choose Forgot password on the sign-in page and follow the link sent to your email address to reset your password.",
        ("2024-01-15T09:30:00+0000", "2024-02-01T10:00:00+0000")),
    article(2, "FAQ13", 1000079, &FAQ, "How do I change my email address?",
        "Open Account settings, choose Email, enter the new address and confirm it from the message we send.",
        ("2024-01-16T09:30:00+0000", "2024-01-16T09:30:00+0000")),
    article(3, "FAQ14", 1000080, &FAQ, "Why is my account locked?",
        "An account is locked after five failed sign-in attempts. Wait for an administrator to unlock it, or reset your password.",
        ("2024-01-17T09:30:00+0000", "2024-03-05T12:00:00+0000")),
    article(4, "FAQ15", 1000081, &FAQ, "How do I update my billing details?",
        "Open Billing, choose Payment methods and add or replace a card. Invoices use the new details from the next cycle.",
        ("2024-01-18T09:30:00+0000", "2024-01-18T09:30:00+0000")),
    article(5, "FAQ16", 1000082, &FAQ, "Can I use two-factor authentication?",
        "Yes: open Security, choose Two-factor authentication and scan the code with an authenticator app.",
        ("2024-02-02T09:30:00+0000", "2024-02-02T09:30:00+0000")),
    article(6, "SO17", 1000083, &SOLUTIONS, "Installing the desktop client on Windows",
        "Download the installer, run it as an administrator and sign in with your account when it starts.",
        ("2024-02-10T09:30:00+0000", "2024-02-12T09:30:00+0000")),
    article(7, "SO18", 1000084, &SOLUTIONS, "Troubleshooting sign-in problems",
        "Clear the browser cache, check the keyboard layout, then reset your password if sign-in still fails.",
        ("2024-02-11T09:30:00+0000", "2024-02-11T09:30:00+0000")),
    Article {
        staff_only: true,
        ..article(8, "FAQ19", 1000085, &FAQ, "Unlocking a customer account (agents)",
            "In the console, open the contact, choose Unlock and tell the customer to sign in again.",
            ("2024-03-01T09:30:00+0000", "2024-03-01T09:30:00+0000"))
    },
    Article {
        staff_only: true,
        ..article(9, "SO20", 1000086, &SOLUTIONS, "Escalating a billing dispute (agents)",
            "Record the invoice number, attach the customer's statement and assign the incident to Billing.",
            ("2024-03-02T09:30:00+0000", "2024-03-02T09:30:00+0000"))
    },
];

impl Article {
    /// The article body as Knowledge Advanced returns it in `xml`.
    pub(crate) fn xml(&self) -> String {
        match self.content_type.reference_key {
            "FAQ" => format!(
                "<FAQ><QUESTION><![CDATA[{}]]></QUESTION><ANSWER><![CDATA[<p>{}</p>]]></ANSWER></FAQ>",
                self.title, self.body
            ),
            key => format!(
                "<{key}><TITLE><![CDATA[{}]]></TITLE><DESCRIPTION><![CDATA[{}]]></DESCRIPTION></{key}>",
                self.title, self.body
            ),
        }
    }

    /// Whether a principal of `kind` may see this article.
    pub(crate) fn visible_to(&self, kind: &str) -> bool {
        !self.staff_only || kind == "account"
    }

    /// The search API's document key for it:
    /// `IM:{type}:{recordId}:{locale}:published:{documentId}:{answerId}:{version}`.
    pub(crate) fn im_url(&self) -> String {
        format!(
            "IM:{}:{}:{LOCALE}:published:{}:{}:{}",
            self.content_type.reference_key, self.record_id, self.document_id, self.answer_id, self.version
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_answer_ids_ordered() {
        for pair in ARTICLES.windows(2) {
            assert!(pair[0].answer_id < pair[1].answer_id);
        }
        let mut docs: Vec<_> = ARTICLES.iter().map(|a| a.document_id).collect();
        docs.sort_unstable();
        docs.dedup();
        assert_eq!(docs.len(), ARTICLES.len());
    }

    #[test]
    fn bodies_are_the_xml_the_sample_renderers_read() {
        assert!(ARTICLES[1].xml().starts_with("<FAQ><QUESTION><![CDATA["));
        assert!(ARTICLES[0].xml().starts_with("<SOLUTIONS><TITLE><![CDATA["));
        assert!(ARTICLES[1].im_url().starts_with("IM:FAQ:"));
    }
}
