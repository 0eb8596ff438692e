// The Profile dialog, the user's account page: display name, bio and avatar
// (a chosen image is previewed, uncropped, as it will appear: in the round
// frame and beside a message, before it is saved); the account's sessions
// and password (account.js); the user's access tokens and bots
// (integrations.js).
import * as api from './api.js';
import { $, h, openDialog, submitDialogForm } from './dom.js';
import { showAccount } from './account.js';
import { showIntegrations } from './integrations.js';
import { paintAvatar } from './media.js';
import { cachedUser, rememberUser } from './users.js';

// What the server takes as an avatar (an image it can thumbnail).
const AVATAR_TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];

// getMe() → the signed-in User.
export function setupProfile(getMe) {
  const dialog = $('#profile-dialog');
  const form = $('form', dialog);
  const preview = $('#profile-avatar');
  const empty = $('#profile-avatar-empty');
  const note = $('#profile-avatar-note');
  const removeButton = $('#profile-avatar-remove');
  const sampleAvatar = h('img', { class: 'avatar', alt: '', hidden: true });
  const sampleName = h('span', { class: 'sender' });
  $('#profile-sample').append(
    h('span', { class: 'hint' }, 'Beside your messages: '),
    h('span', { class: 'message-header' }, sampleAvatar, sampleName));
  let me = null;
  let localPreview = null; // blob: URL of a chosen, not yet saved file
  let removing = false; // "Remove avatar" pressed, not yet saved

  function dropLocalPreview() {
    if (localPreview) URL.revokeObjectURL(localPreview);
    localPreview = null;
  }

  // The avatar as it will be after Save (the chosen file, none, or the
  // current one) in the large frame and in the sample message header.
  function paintPreview() {
    const current = !removing && !localPreview && me.avatar_media_id;
    for (const img of [preview, sampleAvatar]) {
      if (localPreview) {
        img.src = localPreview;
        img.hidden = false;
      } else if (current) {
        paintAvatar(img, me);
      } else {
        img.hidden = true;
      }
    }
    const shown = Boolean(localPreview || current);
    empty.hidden = shown;
    removeButton.hidden = !shown;
    preview.alt = localPreview ? 'Preview of your new avatar' : 'Your avatar';
    note.textContent = localPreview ? 'Preview: your new avatar is saved with Save.'
      : removing ? 'Your avatar is removed with Save.'
        : 'An image (PNG, JPEG, GIF or WebP), shown round.';
  }

  function paintSampleName() {
    sampleName.textContent = form.elements.display_name.value.trim() || me.username;
    empty.textContent = sampleName.textContent.slice(0, 1).toUpperCase();
  }

  $('#profile-button').addEventListener('click', async () => {
    me = cachedUser(getMe().id) ?? getMe();
    form.reset();
    removing = false;
    form.elements.display_name.value = me.display_name;
    form.elements.bio.value = me.bio ?? '';
    paintPreview();
    paintSampleName();
    const account = $('#profile-account');
    const integrations = $('#profile-integrations');
    showAccount(account, me);
    showIntegrations(integrations, me);
    dialog.classList.toggle('wide', !me.is_bot);
    await openDialog(dialog);
    dropLocalPreview();
    account.replaceChildren();
    integrations.replaceChildren(); // a token shown once is gone with the dialog
  });

  form.elements.display_name.addEventListener('input', paintSampleName);

  form.elements.avatar.addEventListener('change', () => {
    const [file] = form.elements.avatar.files;
    dropLocalPreview();
    const error = $('.error', form);
    error.textContent = '';
    if (file && !AVATAR_TYPES.includes(file.type)) {
      form.elements.avatar.value = '';
      error.textContent = `${file.name} is not a PNG, JPEG, GIF or WebP image.`;
    } else if (file) {
      localPreview = URL.createObjectURL(file);
      removing = false;
    }
    paintPreview();
  });

  removeButton.addEventListener('click', () => {
    dropLocalPreview();
    form.elements.avatar.value = '';
    removing = true;
    paintPreview();
    form.elements.avatar.focus();
  });

  submitDialogForm(form, async (data) => {
    const changes = { display_name: data.get('display_name').trim(), bio: data.get('bio').trim() };
    const file = data.get('avatar');
    if (file && file.size) changes.avatar_media_id = (await api.upload(file)).id;
    else if (removing) changes.avatar_media_id = null;
    rememberUser(await api.patch('/users/me', changes));
  });
}
