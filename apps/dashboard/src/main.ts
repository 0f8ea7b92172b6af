// Composition root of the page: the stored key → the store → the shell; or the sign-in form.
import 'uplot/dist/uPlot.min.css';
import './styles.css';
import { createApiClient, type ApiClient, type StoreAnswer } from './api';
import { bannerText } from './banner';
import { MAX_BACKOFF_MS, RETRY_MS, type View } from './context';
import { h, replaceChildren } from './dom';
import { KeyRejectedError, RateLimitedError, UnreachableError } from './errors';
import { startPoller, type Poller } from './live';
import { mountShell } from './shell';
import { mountSignIn, type SignInView } from './sign-in';

/** Where the read key is kept between visits; "Sign out" removes it. */
export const KEY_STORAGE = 'tally.readKey';

const root = document.getElementById('app')!;
const locale = navigator.language || undefined;

let view: View | undefined;
let connecting: Poller | undefined;

function show(next: View): void {
  view?.destroy();
  view = next;
}

function signIn(message?: { text: string; kind: 'error' | 'info' }): SignInView {
  connecting?.stop();
  const form = mountSignIn(root, (key) => connect(key, form));
  if (message) form.say(message.text, message.kind);
  show(form);
  return form;
}

function signOut(message?: { text: string; kind: 'error' | 'info' }): void {
  localStorage.removeItem(KEY_STORAGE);
  signIn(message);
}

function dashboard(api: ApiClient, store: StoreAnswer): void {
  show(
    mountShell(root, {
      api,
      store,
      locale,
      onSignOut: () => signOut({ text: 'Signed out.', kind: 'info' }),
      onKeyRejected: () =>
        signOut({ text: 'This key was not accepted. It may have been revoked; sign in with another read key.', kind: 'error' }),
    }),
  );
}

/**
 * Tries `key` against /v1/store until Tally answers. A rejected key goes back to the form with "This key was not
 * accepted"; an unreachable Tally is retried (backing off to 10 s) with "Tally is not reachable; retrying", and a
 * store over its request rate limit (429) after its Retry-After, with "Too many requests for this store right now".
 */
function connect(key: string, form?: SignInView): void {
  connecting?.stop();
  const api = createApiClient({ key });
  let waiting: HTMLElement | undefined;
  form?.say('', 'info');
  form?.busy(true);
  connecting = startPoller({
    intervalMs: RETRY_MS,
    maxBackoffMs: MAX_BACKOFF_MS,
    run: async () => {
      const store = await api.store();
      connecting?.stop();
      localStorage.setItem(KEY_STORAGE, key);
      dashboard(api, store);
    },
    onError: (err, retryInMs) => {
      if (err instanceof KeyRejectedError) {
        localStorage.removeItem(KEY_STORAGE);
        // 403: the key is the store's, but has no read scope (an ingest or admin key); 401: no such key.
        const text =
          err.status === 403
            ? 'This key was not accepted: it is a key of your store, but not a read key. Sign in with a read key.'
            : 'This key was not accepted. Check that it is a read key of your store.';
        (form ?? signIn()).say(text, 'error');
        form?.busy(false);
        return false;
      }
      // Both come back by themselves: the poller tries again (after the Retry-After of a 429).
      const retrying = err instanceof UnreachableError || err instanceof RateLimitedError;
      const text =
        err instanceof UnreachableError
          ? 'Tally is not reachable; retrying.'
          : err instanceof RateLimitedError
            ? bannerText({ unreachable: false, rateLimited: { retryInMs, requestsPerSecond: err.requestsPerSecond } }, locale)!
            : `Tally could not answer: ${(err as Error).message}`;
      if (form) {
        form.say(text, retrying ? 'info' : 'error');
        if (!retrying) form.busy(false);
      } else {
        // A key from an earlier visit: no form to show it in, a plain page that says what is going on.
        waiting ??= h('p', { class: 'banner', role: 'status', 'data-testid': 'banner' });
        waiting.textContent = text;
        if (!root.contains(waiting)) {
          show({ destroy() {} });
          const signOutButton = h('button', { type: 'button', onclick: () => signOut() }, 'Sign out');
          const page = h('div', { class: 'sign-in' }, h('h1', {}, 'Tally'), waiting, signOutButton);
          replaceChildren(root, h('main', { class: 'sign-in-page' }, page));
        }
      }
      return retrying;
    },
  });
}

const saved = localStorage.getItem(KEY_STORAGE);
if (saved) connect(saved);
else signIn();
