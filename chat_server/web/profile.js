// The profile dialog: display name and avatar; the user's access tokens and
// bots (integrations.js).
import * as api from './api.js';
import { $, openDialog, submitDialogForm } from './dom.js';
import { showIntegrations } from './integrations.js';
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
    const integrations = $('#profile-integrations');
    showIntegrations(integrations, me);
    dialog.classList.toggle('wide', !me.is_bot);
    await openDialog(dialog);
    dropLocalPreview();
    integrations.replaceChildren(); // a token shown once is gone with the dialog
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
