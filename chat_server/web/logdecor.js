// Decoration of a list of message articles (the room log, a thread's
// replies): a day heading before the first message of each day, and the
// class `continued` on a message that follows one by the same sender within
// GROUP_MS on the same day, which style.css shows without the sender's name
// and avatar (the name stays in the article for assistive technology); the
// message before it gets `continues`.
// Call decorateLog after inserting, replacing or removing articles; it walks
// the list once and touches only what changed.
import { $, h } from './dom.js';
import { dayTime, paintTime } from './time.js';

const GROUP_MS = 5 * 60_000;
const facts = new WeakMap(); // article → its data, read once

function factsOf(article) {
  let known = facts.get(article);
  if (!known) {
    const { sender, created, day } = article.dataset;
    known = { sender, day, time: Date.parse(created) };
    facts.set(article, known);
  }
  return known;
}

function continues(previous, current) {
  const gap = current.time - previous.time;
  return previous.sender === current.sender && previous.day === current.day && gap >= 0 && gap < GROUP_MS;
}

// The heading before the first message of a day. Its data-seq sits just
// below the message's, so the log's seq-ordered insertion (messages.js,
// thread.js) puts earlier messages before it and later ones after.
function dayHeading(day) {
  return h('h3', { class: 'day-separator', 'data-day': day }, dayTime(day));
}

function setContinued(article, continued) {
  if (article.classList.contains('continued') === continued) return;
  article.classList.toggle('continued', continued);
  const time = $('time.message-time', article);
  if (time) paintTime(time);
}

function setContinues(article, next) {
  if (article && article.classList.contains('continues') !== next) article.classList.toggle('continues', next);
}

// startDay: the day of what is shown just above the list (a thread's first
// message above its replies), which then needs no heading of its own.
export function decorateLog(list, { startDay = null } = {}) {
  let day = startDay;
  let previous = null; // the article just above, while nothing else is shown between
  const headings = new Set();
  const stale = [];
  for (let node = list.firstElementChild; node; node = node.nextElementSibling) {
    if (node.localName !== 'article') {
      if (node.classList.contains('day-separator')) stale.push(node);
      // Anything else shown between two messages (a notice) starts a new group.
      else if (!node.hidden) {
        setContinues(previous, false);
        previous = null;
      }
      continue;
    }
    const current = factsOf(node);
    const newDay = current.day !== day;
    day = current.day;
    if (newDay) {
      let heading = node.previousElementSibling;
      if (!heading?.classList.contains('day-separator') || heading.dataset.day !== day) {
        heading = dayHeading(day);
        node.before(heading);
      }
      const seq = String(Number(node.dataset.seq) - 0.5);
      if (heading.dataset.seq !== seq) heading.dataset.seq = seq;
      headings.add(heading);
    }
    const continued = !newDay && previous !== null && continues(factsOf(previous), current);
    setContinued(node, continued);
    setContinues(previous, continued);
    previous = node;
  }
  setContinues(previous, false);
  for (const heading of stale) {
    if (!headings.has(heading)) heading.remove();
  }
}
