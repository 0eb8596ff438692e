// Media needs the Authorization header, which <img> and <a> cannot send, so
// files are fetched with it and shown through blob: URLs (cached per path).
import * as api from './api.js';
import { h } from './dom.js';

const PREVIEW_SIZE = 320;
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

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

// An <img> filled from the thumbnail endpoint; onLoad lets the message log
// keep its scroll position while the image takes up room.
function thumbnail(mediaId, size, alt, className, onLoad) {
  const img = h('img', { alt, class: className });
  if (onLoad) img.addEventListener('load', onLoad, { once: true });
  blobUrl(`/media/${mediaId}/thumbnail`, size).then(
    (url) => { img.src = url; },
    () => img.remove(),
  );
  return img;
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

export function renderAttachment(media, onImageLoad) {
  const isImage = media.content_type.startsWith('image/') && media.width !== null;
  return h('div', { class: 'attachment' },
    isImage ? thumbnail(media.id, PREVIEW_SIZE, media.filename, 'preview', onImageLoad) : null,
    downloadLink(media));
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
