// Message times: "just now" and "5 min ago" within the hour, then the time
// of day ("14:05"; the log's day headings say which day); the full date and
// time on hover (title) and in `datetime`. Day headings read "Today",
// "Yesterday" or the date. A timer keeps both current while the page is open.
import { h } from './dom.js';

const MINUTE_MS = 60_000;
const HOUR_MS = 60 * MINUTE_MS;
const REFRESH_MS = 30_000;
// Formatters are made once: a toLocale…String call with options builds a new one each time.
const CLOCK = new Intl.DateTimeFormat([], { hour: 'numeric', minute: '2-digit' });
const FULL = new Intl.DateTimeFormat([], { dateStyle: 'full', timeStyle: 'short' });
const DATE_AND_CLOCK = new Intl.DateTimeFormat([], { dateStyle: 'medium', timeStyle: 'short' });
const DAY = new Intl.DateTimeFormat([], { weekday: 'long', month: 'long', day: 'numeric' });
const DAY_AND_YEAR = new Intl.DateTimeFormat([], { weekday: 'long', month: 'long', day: 'numeric', year: 'numeric' });
let timer = null;

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

// The local calendar day of an ISO time, as YYYY-MM-DD.
export function dayKey(iso) {
  const date = new Date(iso);
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

// compact: the time of day only (a grouped message's, beside the one above it).
function timeLabel(date, now, compact) {
  const age = now - date;
  if (!compact && age > -MINUTE_MS && age < HOUR_MS && sameDay(date, now)) {
    return age < MINUTE_MS ? 'just now' : `${Math.floor(age / MINUTE_MS)} min ago`;
  }
  return CLOCK.format(date);
}

function dayLabel(key, now) {
  const [year, month, day] = key.split('-').map(Number);
  const date = new Date(year, month - 1, day);
  if (sameDay(date, now)) return 'Today';
  const yesterday = new Date(now.getFullYear(), now.getMonth(), now.getDate() - 1);
  if (sameDay(date, yesterday)) return 'Yesterday';
  return (date.getFullYear() === now.getFullYear() ? DAY : DAY_AND_YEAR).format(date);
}

// Brings a message time up to date; a grouped message (in an article with
// the class `continued`) shows the time of day.
export function paintTime(element, now = new Date()) {
  const label = timeLabel(new Date(element.dateTime), now, Boolean(element.closest('.continued')));
  if (element.textContent !== label) element.textContent = label;
}

function paintDay(element, now = new Date()) {
  const label = dayLabel(element.dateTime, now);
  if (element.textContent !== label) element.textContent = label;
}

function refreshAll() {
  const now = new Date();
  for (const element of document.querySelectorAll('time.message-time')) paintTime(element, now);
  for (const element of document.querySelectorAll('time.day-label')) paintDay(element, now);
}

function startClock() {
  timer ??= setInterval(refreshAll, REFRESH_MS);
}

// A message's time: <time class="message-time" datetime title>.
export function messageTime(iso) {
  startClock();
  const element = h('time', { class: 'message-time', datetime: iso, title: FULL.format(new Date(iso)) });
  paintTime(element);
  return element;
}

// A day heading's text: <time class="day-label" datetime="YYYY-MM-DD">.
export function dayTime(key) {
  startClock();
  const element = h('time', { class: 'day-label', datetime: key });
  paintDay(element);
  return element;
}

// A time with its date, for lists outside the log (search results).
export function dateAndClock(iso) {
  return DATE_AND_CLOCK.format(new Date(iso));
}
