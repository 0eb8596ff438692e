// Markdown in message bodies: `marked` (GFM, a line break where the writer
// pressed Enter) turns the text into HTML, `DOMPurify` keeps only the tags
// below, and links open in a new tab. HTML written in a body is never HTML:
// marked's `html` tokens are escaped, so `<b>` shows as the text `<b>`.
// Images are links (a body never makes the browser fetch a remote URL) and
// headings are bold paragraphs (a chat line is not a document section).
import { Marked } from './vendor/marked.esm.js';
import DOMPurify from './vendor/purify.es.js';

const ALLOWED_TAGS = [
  'p', 'br', 'strong', 'em', 'del', 'code', 'pre', 'blockquote', 'ul', 'ol', 'li', 'a', 'hr',
  'table', 'thead', 'tbody', 'tr', 'th', 'td',
];
const ALLOWED_ATTR = ['href', 'title', 'start'];
const SAFE_URL = /^(?:https?:|mailto:)/i;
// Where mentions are not looked for: code is verbatim, a link's text is the link's.
const NO_MENTIONS = 'code, pre, a';

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const marked = new Marked({
  gfm: true,
  breaks: true,
  renderer: {
    html({ text, block }) {
      return block ? `<p>${escapeHtml(text.trim())}</p>\n` : escapeHtml(text);
    },
    heading({ tokens }) {
      return `<p><strong>${this.parser.parseInline(tokens)}</strong></p>\n`;
    },
    image(token) {
      return token.text ? this.link(token) : this.link({ ...token, text: token.href, autolink: true });
    },
    // The newline stays in the text after the break (textContent, copying).
    br() {
      return '<br>\n';
    },
    checkbox({ checked }) {
      return checked ? '☑ ' : '☐ ';
    },
  },
});

// Links whose href survived sanitizing (http, https, mailto) open in a new
// tab without telling the target where they came from; the others become
// their text.
function finishLinks(fragment) {
  for (const link of fragment.querySelectorAll('a')) {
    if (SAFE_URL.test(link.getAttribute('href') ?? '')) {
      link.target = '_blank';
      link.rel = 'noopener noreferrer';
    } else {
      link.replaceWith(...link.childNodes);
    }
  }
}

// decorateText(text) → [string | Node] replaces a text node outside code and
// links (mentions.js styles `@name` this way); it returns the text alone
// when there is nothing to change.
function decorateTextNodes(fragment, decorateText) {
  const walker = document.createTreeWalker(fragment, NodeFilter.SHOW_TEXT);
  const nodes = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!node.parentElement?.closest(NO_MENTIONS)) nodes.push(node);
  }
  for (const node of nodes) {
    const parts = decorateText(node.data);
    if (parts.length !== 1 || typeof parts[0] !== 'string') node.replaceWith(...parts.filter((part) => part !== ''));
  }
}

// The body as a DocumentFragment of sanitized Markdown blocks.
export function renderMarkdown(text, { decorateText } = {}) {
  const html = marked.parse(text, { async: false });
  const fragment = DOMPurify.sanitize(html, {
    ALLOWED_TAGS,
    ALLOWED_ATTR,
    ALLOWED_URI_REGEXP: SAFE_URL,
    // A list's first number: not a URL (DOMPurify checks attributes it does
    // not know against ALLOWED_URI_REGEXP).
    ADD_URI_SAFE_ATTR: ['start'],
    ALLOW_DATA_ATTR: false,
    ALLOW_ARIA_ATTR: false,
    RETURN_DOM_FRAGMENT: true,
  });
  finishLinks(fragment);
  if (decorateText) decorateTextNodes(fragment, decorateText);
  return fragment;
}
