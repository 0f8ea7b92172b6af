// The sign-in form: one read key, kept in this browser (localStorage) until "Sign out".
import type { View } from './context';
import { h, replaceChildren, setText } from './dom';

export interface SignInView extends View {
  /** A line under the form: an error ("This key was not accepted") or news ("Tally is not reachable; retrying"). */
  say(message: string, kind: 'error' | 'info'): void;
  /** While a key is being tried: the button is disabled. */
  busy(on: boolean): void;
}

export function mountSignIn(root: HTMLElement, onSubmit: (key: string) => void): SignInView {
  const input = h('input', {
    id: 'read-key',
    name: 'key',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    required: true,
    placeholder: 'tly_…',
    'aria-describedby': 'sign-in-help sign-in-message',
  });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const message = h('p', { id: 'sign-in-message', class: 'sign-in-message', role: 'alert', 'data-testid': 'sign-in-message' });
  const form = h(
    'form',
    {
      class: 'sign-in',
      'data-testid': 'sign-in',
      onsubmit: (event: Event) => {
        event.preventDefault();
        const key = input.value.trim();
        if (key) onSubmit(key);
      },
    },
    h('h1', {}, 'Tally'),
    h('p', { class: 'lead' }, "Sign in to see your store's numbers, live."),
    h('label', { for: 'read-key' }, 'Read key'),
    input,
    h(
      'p',
      { id: 'sign-in-help', class: 'help' },
      'A read key of your store, as given by your Tally administrator. It stays in this browser until you sign out.',
    ),
    button,
    message,
  );
  replaceChildren(root, h('main', { class: 'sign-in-page' }, form));
  input.focus();

  return {
    say(text, kind) {
      message.className = `sign-in-message ${kind}`;
      setText(message, text);
    },
    busy(on) {
      button.disabled = on;
      setText(button, on ? 'Signing in…' : 'Sign in');
    },
    destroy() {},
  };
}
