// The banner shown while the WebSocket is down: when the next attempt to
// reconnect starts (a countdown) and a `Retry now` button. The status line
// (role=status) keeps saying just `Reconnecting…` for assistive technology;
// the banner's countdown is not a live region, so it is not read out every
// second.
import { $ } from './dom.js';

export class OutageBanner {
  // onRetryNow() when the user asks to reconnect at once.
  constructor(onRetryNow) {
    this.element = $('#outage');
    this.text = $('#outage-text');
    this.retryAt = null;
    this.timer = null;
    this.onClick = () => onRetryNow();
    $('#retry-now').addEventListener('click', this.onClick);
  }

  // Down: retryAt is the time of the next attempt, null while one runs.
  show(retryAt) {
    this.retryAt = retryAt;
    this.element.hidden = false;
    this.#paint();
    clearInterval(this.timer);
    if (retryAt !== null) this.timer = setInterval(() => this.#paint(), 250);
  }

  hide() {
    clearInterval(this.timer);
    this.timer = null;
    this.element.hidden = true;
  }

  destroy() {
    this.hide();
    $('#retry-now').removeEventListener('click', this.onClick);
  }

  #paint() {
    const seconds = this.retryAt === null ? 0 : Math.ceil((this.retryAt - Date.now()) / 1000);
    this.text.textContent = seconds > 0
      ? `Connection lost. Reconnecting in ${seconds} s…`
      : 'Connection lost. Reconnecting now…';
  }
}
