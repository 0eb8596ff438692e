// The full-size image viewer: a modal dialog named after the file, opened
// from an image preview. Escape, `Close` or a click beside the image closes
// it, and focus goes back to the preview that opened it.
import { h } from './dom.js';
import { PREVIEW_SIZE, imageUrl } from './media.js';

let viewer = null;

function createViewer() {
  const image = h('img', { class: 'viewer-image', alt: '' });
  const title = h('h2', { id: 'viewer-title', class: 'viewer-title' });
  const close = h('button', { type: 'button', class: 'viewer-close' }, 'Close');
  const dialog = h('dialog', { class: 'viewer', 'aria-labelledby': 'viewer-title' },
    h('div', { class: 'viewer-bar' }, title, close), image);
  close.addEventListener('click', () => dialog.close());
  dialog.addEventListener('click', (event) => {
    if (event.target === dialog) dialog.close(); // the backdrop
  });
  document.body.append(dialog);
  return { dialog, image, title, close, opener: null, generation: 0 };
}

export function openViewer(media, opener) {
  viewer ??= createViewer();
  const { dialog, image, title, close } = viewer;
  const generation = ++viewer.generation;
  title.textContent = media.filename;
  image.alt = media.filename;
  image.width = media.width;
  image.height = media.height;
  image.removeAttribute('src');
  let full = false; // the file itself is shown: the thumbnail must not replace it
  const show = (url) => {
    if (generation === viewer.generation) image.src = url;
  };
  // The preview, already fetched, shows while the file loads.
  imageUrl(media, PREVIEW_SIZE).then((url) => full || show(url), () => {});
  imageUrl(media).then((url) => {
    full = true;
    show(url);
  }, () => {});
  viewer.opener = opener;
  dialog.addEventListener('close', () => {
    if (generation === viewer.generation) viewer.opener?.focus();
  }, { once: true });
  dialog.showModal();
  close.focus();
}
