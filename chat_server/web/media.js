// Media needs the Authorization header, which <img> and <a> cannot send, so
// files are fetched with it and shown through blob: URLs (cached per path).
import * as api from './api.js';
import { formatSize, h } from './dom.js';

export const PREVIEW_SIZE = 320;
const AVATAR_SIZE = 96;
const urls = new Map(); // "path?size" → Promise<blob: URL>

function blobUrl(path, size) {
  const key = `${path}?${size ?? ''}`;
  if (!urls.has(key)) {
    const url = api.getBlob(path, size ? { size } : undefined).then((blob) => URL.createObjectURL(blob));
    url.catch(() => urls.delete(key)); // let a later render try again
    urls.set(key, url);
  }
  return urls.get(key);
}

export function revokeBlobs() {
  for (const url of urls.values()) url.then(URL.revokeObjectURL, () => {});
  urls.clear();
}

// The size a width×height image is shown at within a size×size box.
function fit(width, height, size) {
  const scale = Math.min(1, size / Math.max(width, height));
  return { width: Math.round(width * scale), height: Math.round(height * scale) };
}

// A download link that fetches the file with the token when followed.
function downloadLink(media) {
  const link = h('a', { href: `/api/v1/media/${media.id}`, download: media.filename, class: 'file' },
    media.filename, h('span', { class: 'hint' }, ` (${formatSize(media.size)})`));
  link.addEventListener('click', async (event) => {
    if (link.href.startsWith('blob:')) return; // already fetched: let the browser save it
    event.preventDefault();
    try {
      link.href = await blobUrl(`/media/${media.id}`);
      link.click();
    } catch (error) {
      link.title = `Download failed: ${error.message}`;
    }
  });
  return link;
}

// An image's blob: URL: its thumbnail that fits size×size, or the file.
export function imageUrl(media, size = null) {
  return size ? blobUrl(`/media/${media.id}/thumbnail`, size) : blobUrl(`/media/${media.id}`);
}

// view(media, opener), when given, shows an image full size (viewer.js);
// its preview is then a button.
export function renderAttachment(media, { view } = {}) {
  let preview = null;
  if (media.content_type.startsWith('image/') && media.width && media.height) {
    // width and height reserve the space now, so the log (and the reader's
    // place in it) does not jump when the image arrives.
    const img = h('img', { alt: media.filename, class: 'preview', ...fit(media.width, media.height, PREVIEW_SIZE) });
    preview = view
      ? h('button', { type: 'button', class: 'preview-button', 'aria-haspopup': 'dialog', onclick: (event) => view(media, event.currentTarget) }, img)
      : img;
    imageUrl(media, PREVIEW_SIZE).then(
      (url) => { img.src = url; },
      () => preview.remove(), // not decodable after all: the link remains
    );
  }
  return h('div', { class: 'attachment' }, preview, downloadLink(media));
}

// Shows (or hides) a user's avatar in an <img data-avatar>.
export function paintAvatar(img, user) {
  if (!user?.avatar_media_id) {
    img.hidden = true;
    return;
  }
  blobUrl(`/media/${user.avatar_media_id}/thumbnail`, AVATAR_SIZE).then(
    (url) => {
      img.src = url;
      img.hidden = false;
    },
    () => { img.hidden = true; },
  );
}

export function avatarImage(userId, user) {
  const img = h('img', { class: 'avatar', alt: '', 'data-avatar': userId, hidden: true });
  paintAvatar(img, user);
  return img;
}
