// The profile dialog: display name and avatar.
import * as api from './api.js';
import { $, openDialog, submitDialogForm } from './dom.js';
import { paintAvatar } from './media.js';
import { cachedUser, rememberUser } from './users.js';

// getMe() → the signed-in User.
export function setupProfile(getMe) {
  const dialog = $('#profile-dialog');
  const form = $('form', dialog);
  const preview = $('#profile-avatar');
  let localPreview = null; // blob: URL of a chosen, not yet saved file

  function dropLocalPreview() {
    if (localPreview) URL.revokeObjectURL(localPreview);
    localPreview = null;
  }

  $('#profile-button').addEventListener('click', async () => {
    const me = cachedUser(getMe().id) ?? getMe();
    form.reset();
    form.elements.display_name.value = me.display_name;
    preview.dataset.avatar = me.id; // repainted when the profile changes
    paintAvatar(preview, me);
    await openDialog(dialog);
    dropLocalPreview();
  });

  form.elements.avatar.addEventListener('change', () => {
    const [file] = form.elements.avatar.files;
    if (!file) return;
    dropLocalPreview();
    localPreview = URL.createObjectURL(file);
    preview.src = localPreview;
    preview.hidden = false;
  });

  submitDialogForm(form, async (data) => {
    const changes = { display_name: data.get('display_name').trim() };
    const file = data.get('avatar');
    if (file && file.size) changes.avatar_media_id = (await api.upload(file)).id;
    rememberUser(await api.patch('/users/me', changes));
  });
}
