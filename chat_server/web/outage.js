// The banner shown while the server is out of reach (the WebSocket is down,
// or the page cannot load what it starts with): when the next attempt starts
// (a countdown) and a `Retry now` button. The status line (role=status) keeps
// saying just `Reconnecting…` for assistive technology; the banner's countdown
// is not a live region, so it is not read out every second.
import { $ } from './dom.js';

export class OutageBanner {
  constructor() {
    this.element = $('#outage');
    this.text = $('#outage-text');
    this.retryAt = null;
    this.timer = null;
    this.wakeUp = null; // ends a wait() early
    // What `Retry now` does outside a wait(): the signed-in session's socket.
    this.retryNow = () => {};
    $('#retry-now').addEventListener('click', () => (this.wakeUp ?? this.retryNow)());
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

  // Shows the banner until the next try, delay ms from now; resolves then,
  // or as soon as `Retry now` is pressed.
  wait(delay) {
    this.show(Date.now() + delay);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wakeUp = null;
        resolve();
      };
      const timer = setTimeout(done, delay);
      this.wakeUp = done;
    });
  }

  #paint() {
    const seconds = this.retryAt === null ? 0 : Math.ceil((this.retryAt - Date.now()) / 1000);
    this.text.textContent = seconds > 0
      ? `Connection lost. Reconnecting in ${seconds} s…`
      : 'Connection lost. Reconnecting now…';
  }
}
