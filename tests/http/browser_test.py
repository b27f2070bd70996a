#!/usr/bin/env python3
"""Browser.IndexPageRendersAndItsFiguresMoveUnderWrk: greenhttp's front page (/) in a real
headless Chromium (Debian's `chromium`) while wrk loads the server.

The page's figures are filled in by its own script from /debug/vars once a second, so the test
reads what Chromium rendered (the innerText and layout boxes of the live DOM, and pixels of the
figures table), never the HTML the server sent. It checks, in order:
  1. the page renders: title and static explanation are laid out with a non-zero size, the script
     filled in every figure (Ps = --threads, one run-queue row per P) and threw nothing;
  2. while wrk runs against /plaintext, the figures move: requests/s climbs from the page's own
     ~1 request/s to near wrk's average rate (within a factor of four), "requests served" grows,
     open connections count wrk's connections, each with its own green thread;
  3. once wrk stops, requests/s falls back, "requests served" accounts for every request wrk
     completed (and not many more), and the figures table is painted differently than before.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages
ended by NUL on its fds 3 and 4), so only python3's standard library is needed and no debugging
port is opened. All traffic stays on 127.0.0.1 (no proxy; every host name resolves to nothing).
Every process started here (greenhttp, chromium and its helpers, wrk) is killed on every exit
path, and dies with this script if it is killed (PR_SET_PDEATHSIG). A watchdog bounds the run.

Usage: browser_test.py GREENHTTP_BINARY
Environment: CHROMIUM, WRK (default: `chromium` and `wrk` on PATH; `make deps` installs both).
On failure it prints why, the last figures read and chromium's log, and saves a screenshot of the
page as browser_test_failure.png in the working directory (ctest's: build/tests/http).
"""
import base64
import ctypes
import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # keep loadtest/ free of __pycache__
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'loadtest'))
from harness import procfs  # noqa: E402  (the process-tree walk make loadtest uses)

THREADS = 2              # greenhttp --threads: the page must show this many Ps and queue rows
WRK_CONNECTIONS = 8
# wrk runs until the page has shown LOADED_REFRESHES refreshes that lie wholly inside the run (and
# at least WRK_MIN_SECONDS), so that a busy machine, where the page refreshes late, makes the test
# longer, not flaky; WRK_MAX_SECONDS bounds it.
WRK_MIN_SECONDS = 4
WRK_MAX_SECONDS = 20
LOADED_REFRESHES = 2
MIN_LOADED_RPS = 200     # the page alone polls at ~1 request/s; greenhttp serves tens of thousands
IDLE_RPS = 10            # "back to idle" after wrk stops
WATCHDOG_SECONDS = 55
FIGURES = ['procs', 'idle_procs_avg', 'machines', 'green_threads', 'steals', 'open_connections',
           'requests', 'rps']


class Failure(Exception):
    pass


def on_watchdog(signum, frame):
    raise Failure(f'the test ran past its {WATCHDOG_SECONDS} s watchdog')


def on_terminate(signum, frame):
    raise Failure(f'terminated by signal {signum}')


def die_with_parent():
    """preexec_fn: SIGKILL this child when the test process dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Processes:
    """Children started in their own process groups; kill_all() ends them and their helpers."""

    def __init__(self):
        self.started = []

    def start(self, argv, **kwargs):
        preexec = kwargs.pop('preexec_fn', None)

        def setup():
            die_with_parent()
            if preexec:
                preexec()
        proc = subprocess.Popen(argv, start_new_session=True, preexec_fn=setup, **kwargs)
        self.started.append(proc)
        return proc

    def kill_all(self):
        for proc in reversed(self.started):
            if proc.poll() is None:
                # Helpers that left the group (chromium's zygote may) are found through /proc.
                targets = procfs.tree(proc.pid)[1:]
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                for pid in targets:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                print(f'warning: pid {proc.pid} survived SIGKILL for 10 s', file=sys.stderr)


class DevTools:
    """The DevTools protocol over chromium's --remote-debugging-pipe, one call at a time."""

    def __init__(self, to_browser, from_browser):
        self.to_browser = to_browser
        self.from_browser = from_browser
        self.buffer = b''
        self.last_id = 0
        self.events = []

    def call(self, method, params=None, session=None, timeout=20):
        self.last_id += 1
        message = {'id': self.last_id, 'method': method, 'params': params or {}}
        if session:
            message['sessionId'] = session
        data = json.dumps(message).encode() + b'\0'
        try:
            while data:
                data = data[os.write(self.to_browser, data):]
        except BrokenPipeError:
            raise Failure(f'chromium closed its DevTools pipe (it exited) before {method}')
        deadline = time.monotonic() + timeout
        while True:
            reply = self._next_message(deadline, method)
            if reply.get('id') == self.last_id:
                if 'error' in reply:
                    raise Failure(f'DevTools {method}: {reply["error"]}')
                return reply.get('result', {})
            self.events.append(reply)

    def _next_message(self, deadline, method):
        while b'\0' not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure(f'chromium did not answer DevTools {method} in time')
            ready, _, _ = select.select([self.from_browser], [], [], left)
            if ready:
                chunk = os.read(self.from_browser, 1 << 16)
                if not chunk:
                    raise Failure('chromium closed its DevTools pipe (it exited)')
                self.buffer += chunk
        message, self.buffer = self.buffer.split(b'\0', 1)
        return json.loads(message)


class Page:
    def __init__(self, devtools, session):
        self.devtools = devtools
        self.session = session
        self.last_figures = None

    def call(self, method, params=None):
        return self.devtools.call(method, params, self.session)

    def evaluate(self, expression):
        result = self.call('Runtime.evaluate', {'expression': expression, 'returnByValue': True})
        if 'exceptionDetails' in result:
            raise Failure(f'evaluating {expression!r}: {result["exceptionDetails"]}')
        return result['result'].get('value')

    def check_script_health(self):
        """Fails on an uncaught exception in the page, a crash, or the script's 'offline'."""
        for event in self.devtools.events:
            method = event.get('method')
            if method == 'Runtime.exceptionThrown':
                details = event['params']['exceptionDetails']
                text = details.get('exception', {}).get('description') or details.get('text')
                raise Failure(f'the page\'s script threw: {text}')
            if method in ('Inspector.targetCrashed', 'Target.targetCrashed'):
                raise Failure('the page\'s renderer crashed')

    def figures(self):
        """The figures as rendered (innerText), parsed to ints where they are numbers."""
        raw = self.evaluate('''(() => {
          const f = {};
          for (const id of %s) {
            const e = document.getElementById(id);
            f[id] = e ? e.innerText.trim() : null;
          }
          const q = document.getElementById('queues');
          f.queue_rows = q ? Array.from(q.rows, r => r.innerText.replace(/\\s+/g, ' ').trim())
                           : null;
          f.updated = document.body.dataset.updated || null;
          return f;
        })()''' % json.dumps(FIGURES))
        self.check_script_health()
        if raw['rps'] == 'offline':
            raise Failure('the page shows requests/s "offline": its fetch of /debug/vars failed')
        parsed = {k: (int(v) if isinstance(v, str) and re.fullmatch(r'-?\d+', v) else
                      float(v) if isinstance(v, str) and re.fullmatch(r'-?\d+\.\d+', v) else v)
                  for k, v in raw.items()}
        parsed['at'] = time.monotonic()
        self.last_figures = parsed
        return parsed

    def screenshot_of(self, element_id):
        rect = self.evaluate(f'''(() => {{
          const r = document.getElementById({json.dumps(element_id)}).getBoundingClientRect();
          return {{x: r.x, y: r.y + window.scrollY, width: r.width, height: r.height}};
        }})()''')
        if rect['width'] <= 0 or rect['height'] <= 0:
            raise Failure(f'#{element_id} has no size on the page: {rect}')
        # The table lies inside the window: no captureBeyondViewport, which resizes the page and
        # made later calls wait for many seconds on a busy machine.
        shot = self.call('Page.captureScreenshot', {'format': 'png', 'clip': dict(rect, scale=1)})
        return base64.b64decode(shot['data'])


def wait_for(what, condition, timeout, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure(f'timed out after {timeout} s waiting for {what}')
        time.sleep(interval)  # polling under the deadline above


def wait_for_figures(page, what, accept, timeout, interval=0.1):
    """Reads the rendered figures until accept(figures) holds; returns those figures."""
    def attempt():
        figures = page.figures()
        return figures if accept(figures) else None
    return wait_for(what, attempt, timeout, interval)


def find_tool(env, name):
    path = os.environ.get(env) or shutil.which(name)
    if not path or not os.access(path, os.X_OK):
        raise Failure(f'`{name}` is not installed (Debian package `{name}`): run `make deps`')
    return path


def start_server(procs, binary, workdir):
    port_file = os.path.join(workdir, 'port')
    with open(os.path.join(workdir, 'greenhttp.log'), 'wb') as log:
        server = procs.start([binary, '--listen', '127.0.0.1:0', '--port-file', port_file,
                              '--access-log', 'off', '--log-level', 'warn',
                              '--threads', str(THREADS)],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def port():
        if server.poll() is not None:
            raise Failure(f'greenhttp exited with {server.returncode} before listening')
        try:
            with open(port_file) as f:
                return int(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0
    return wait_for('greenhttp to write its port file', port, 10, 0.02)


def start_chromium(procs, chromium, workdir):
    """chromium with its DevTools pipe on fds 3 (commands in) and 4 (replies out)."""
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    # Park the child's ends above 4 so that the dup2s below cannot clobber one another.
    child_in = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
    child_out = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(to_browser_r)
    os.close(from_browser_w)

    def pipe_fds():
        os.dup2(child_in, 3)   # dup2 to a new number: inheritable, unlike Python's own fds
        os.dup2(child_out, 4)
    # close_fds would close 3 and 4 after pipe_fds ran; without it, only inheritable fds (0-4:
    # Python opens everything else close-on-exec) reach chromium.

    profile = os.path.join(workdir, 'profile')
    log = open(os.path.join(workdir, 'chromium.log'), 'wb')
    browser = procs.start(
        [chromium, '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
         f'--user-data-dir={profile}', '--remote-debugging-pipe', '--window-size=1000,1200',
         '--no-first-run', '--no-default-browser-check', '--disable-extensions',
         '--disable-background-networking', '--disable-component-update', '--disable-sync',
         '--disable-default-apps', '--disable-domain-reliability', '--no-pings',
         '--disable-client-side-phishing-detection', '--metrics-recording-only', '--mute-audio',
         '--password-store=basic',
         # WebUIOmniboxPopup: one browser-UI renderer fewer burning CPU at startup.
         '--disable-features=Translate,OptimizationHints,MediaRouter,WebUIOmniboxPopup',
         # A polling page must keep its 1 s timer even though nobody looks at it.
         '--disable-background-timer-throttling', '--disable-renderer-backgrounding',
         '--disable-backgrounding-occluded-windows',
         # Only 127.0.0.1: ignore *_proxy variables, resolve no host name at all.
         '--no-proxy-server', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
         'about:blank'],
        # Crash reports and caches go to the temporary directory too, not to ~/.config.
        env=dict(os.environ, XDG_CONFIG_HOME=os.path.join(workdir, 'config'),
                 XDG_CACHE_HOME=os.path.join(workdir, 'cache')),
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=pipe_fds,
        close_fds=False)
    log.close()
    os.close(child_in)
    os.close(child_out)
    return browser, DevTools(to_browser_w, from_browser_r)


def open_page(devtools, url):
    target = devtools.call('Target.createTarget', {'url': 'about:blank'})['targetId']
    session = devtools.call('Target.attachToTarget',
                            {'targetId': target, 'flatten': True})['sessionId']
    page = Page(devtools, session)
    page.call('Runtime.enable')
    page.call('Page.enable')
    navigation = page.call('Page.navigate', {'url': url})
    if navigation.get('errorText'):
        raise Failure(f'chromium could not load {url}: {navigation["errorText"]}')
    wait_for('the page to load', lambda: page.evaluate('document.readyState') == 'complete', 15)
    return page


def check_static_content(page):
    """The page's explanation is there and laid out, as Chromium rendered it."""
    rendered = page.evaluate('''(() => {
      const box = e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
      const explanation = Array.from(document.querySelectorAll('p'))
          .find(p => p.innerText.startsWith('Every connection'));
      return {
        title: document.title,
        h1: document.querySelector('h1')?.innerText,
        h1_box: box(document.querySelector('h1')),
        explanation: explanation?.innerText ?? null,
        explanation_box: explanation ? box(explanation) : null,
        figures_box: box(document.getElementById('figures')),
        body_text: document.body.innerText,
      };
    })()''')
    problems = []
    if rendered['title'] != 'greenhttp' or rendered['h1'] != 'greenhttp':
        problems.append(f'title/h1 are {rendered["title"]!r}/{rendered["h1"]!r}')
    explanation = rendered['explanation'] or ''
    for phrase in ['Every connection is served by its own green thread', 'logical processors (P)',
                   'OS threads (M)', 'work', 'netpoller']:
        if phrase not in explanation:
            problems.append(f'the explanation lacks {phrase!r}')
    for name in ['h1_box', 'explanation_box', 'figures_box']:
        box = rendered[name]
        if not box or box[0] <= 0 or box[1] <= 0:
            problems.append(f'{name} is not laid out: {box}')
    for label in ['Live figures', 'Ps (logical processors)', 'requests/s',
                  'Run queue length per P']:
        if label not in rendered['body_text']:
            problems.append(f'the rendered text lacks {label!r}')
    if problems:
        raise Failure('the page did not render as expected: ' + '; '.join(problems) +
                      '\nrendered text:\n' + rendered['body_text'])


def counters_filled_in(f):
    """The first refresh fills every figure but requests/s, which needs two."""
    return all(isinstance(f[k], float if k == 'idle_procs_avg' else int)
               for k in FIGURES if k != 'rps') and f['updated']


def filled_in(f):
    return counters_filled_in(f) and isinstance(f['rps'], int)


def check_idle_figures(f):
    problems = []
    if f['procs'] != THREADS:
        problems.append(f'Ps is {f["procs"]}, greenhttp runs --threads {THREADS}')
    # The page polls once a second, so the server is idle nearly all the time: most of its Ps
    # must show as idle on average (a snapshot would show the one serving the poll as busy).
    if not f['procs'] / 2 <= f['idle_procs_avg'] <= f['procs']:
        problems.append(f'idle Ps (1 s average) {f["idle_procs_avg"]} is not within '
                        f'{f["procs"] / 2}..{f["procs"]}')
    if f['machines'] < 1 or f['green_threads'] < 1:
        problems.append('no Ms or no green threads')
    if f['open_connections'] < 1:
        problems.append('no open connection, though the page polls over one')
    expected_rows = [f'P{p}' for p in range(THREADS)]
    if [row.split(' ')[0] for row in f['queue_rows'] or []] != expected_rows:
        problems.append(f'the run-queue table has rows {f["queue_rows"]}, expected {expected_rows}')
    if f['rps'] > IDLE_RPS:
        problems.append(f'requests/s is {f["rps"]} before any load')
    if problems:
        raise Failure('idle figures are wrong: ' + '; '.join(problems) + f'\nfigures: {f}')


def run_test(binary, workdir, procs):
    chromium = find_tool('CHROMIUM', 'chromium')
    wrk = find_tool('WRK', 'wrk')
    port = start_server(procs, binary, workdir)
    base = f'http://127.0.0.1:{port}'
    browser, devtools = start_chromium(procs, chromium, workdir)
    try:
        page = open_page(devtools, base + '/')
        try:
            exercise(page, base, wrk, procs)
        except Failure:
            save_screenshot(page)
            if page.last_figures:
                print(f'last figures read: {page.last_figures}', file=sys.stderr)
            raise
    finally:
        close_browser(browser, devtools)


def save_screenshot(page):
    path = os.path.abspath('browser_test_failure.png')
    try:
        shot = page.call('Page.captureScreenshot', {'format': 'png'})
        with open(path, 'wb') as f:
            f.write(base64.b64decode(shot['data']))
        print(f'screenshot of the page: {path}', file=sys.stderr)
    except Exception as e:  # the browser may be what broke
        print(f'(no screenshot: {e})', file=sys.stderr)


def close_browser(browser, devtools):
    """Lets chromium reap its own helpers; Processes.kill_all() deals with whatever remains."""
    try:
        devtools.call('Browser.close', timeout=3)
        browser.wait(timeout=5)
    except (Failure, subprocess.TimeoutExpired):
        pass


def run_wrk(page, base, wrk, procs, idle):
    """Loads /plaintext with wrk while reading the page; returns the page's refreshes that lie
    wholly inside the run, and wrk's count of requests, seconds and output."""
    started = time.time()  # the clock of the page's Date.now() (body's data-updated)
    # wrk is the load, not the subject: niced, so that it cannot starve the browser it is measured
    # by where the kernel does not already share the CPU out by session (each child here has its
    # own session, hence its own autogroup where the kernel has them).
    wrk_proc = procs.start([wrk, '-t1', f'-c{WRK_CONNECTIONS}', f'-d{WRK_MAX_SECONDS}s',
                            '--timeout', '2s', base + '/plaintext'],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, preexec_fn=lambda: os.nice(10))
    loaded = []
    last_update = idle['updated']
    while wrk_proc.poll() is None:
        f = page.figures()
        if f['updated'] != last_update:
            # A refresh's requests/s covers the time since the refresh before it, which came no
            # earlier than the last one read here (its figures were taken just before it).
            if int(last_update) / 1000 >= started + 0.3 and filled_in(f):
                loaded.append(f)
            last_update = f['updated']
            print(f'  refresh at {int(last_update) / 1000 - started:+.2f} s: {f["rps"]} requests/s')
        if len(loaded) >= LOADED_REFRESHES and time.time() - started >= WRK_MIN_SECONDS:
            wrk_proc.send_signal(signal.SIGINT)  # wrk stops and prints its summary
            break
        time.sleep(0.2)  # sampling the page while wrk runs (wrk's -d bounds it), not a wait
    output = wrk_proc.communicate(timeout=10)[0].decode(errors='replace')
    if wrk_proc.returncode != 0:
        raise Failure(f'wrk exited with {wrk_proc.returncode}:\n{output}')
    match = re.search(r'(\d+) requests in ([\d.]+)(ms|s|m)\b', output)
    if not match or 'Non-2xx' in output or int(match.group(1)) < MIN_LOADED_RPS:
        raise Failure(f'wrk did not get {MIN_LOADED_RPS} or more 200s from /plaintext:\n{output}')
    seconds = float(match.group(2)) * {'ms': 0.001, 's': 1, 'm': 60}[match.group(3)]
    return loaded, int(match.group(1)), seconds, output


def exercise(page, base, wrk, procs):
    check_static_content(page)
    # Two refreshes: the first fills the counters, the second computes requests/s.
    first = wait_for_figures(page, 'the script to fill in the figures', counters_filled_in, 10)
    idle = wait_for_figures(page, 'the script to refresh the figures (and compute requests/s)',
                            lambda f: f['updated'] != first['updated'] and filled_in(f), 8)
    check_idle_figures(idle)
    idle_table = page.screenshot_of('figures')
    print(f'idle:   {idle}')

    loaded, wrk_requests, wrk_seconds, wrk_output = run_wrk(page, base, wrk, procs, idle)
    wrk_rate = wrk_requests / wrk_seconds
    peak = max(loaded, key=lambda f: f['rps'], default=None)
    print(f'loaded: {peak}')
    problems = []
    if len(loaded) < LOADED_REFRESHES:
        problems.append(f'the page refreshed {len(loaded)} times in {wrk_seconds:.1f} s of load, '
                        f'expected {LOADED_REFRESHES} or more')
    # These refreshes measured stretches of time wholly under load: the best of them must be well
    # above the page's own polling and near wrk's average (within a factor of four: wrk, niced,
    # slows down and speeds up on a busy machine), which catches a rate off by ten or more.
    low = max(MIN_LOADED_RPS, wrk_rate / 4)
    if loaded and peak['rps'] < low:
        problems.append(f'requests/s peaked at {peak["rps"]} under load, expected {low:.0f} or '
                        f'more (wrk averaged {wrk_rate:.0f}/s)')
    if loaded and not all(f['requests'] >= idle['requests'] + MIN_LOADED_RPS for f in loaded):
        problems.append(f'"requests served" stayed near {idle["requests"]} under load')
    if loaded and min(f['idle_procs_avg'] for f in loaded) >= idle['idle_procs_avg']:
        problems.append(f'idle Ps (1 s average) never fell below its idle {idle["idle_procs_avg"]} '
                        f'under load: {[f["idle_procs_avg"] for f in loaded]}')
    if not any(f['green_threads'] >= f['open_connections'] >= WRK_CONNECTIONS for f in loaded):
        problems.append(f'no refresh shows wrk\'s {WRK_CONNECTIONS} open connections, each with a '
                        f'green thread (open connections, green threads): '
                        f'{[(f["open_connections"], f["green_threads"]) for f in loaded]}')
    if problems:
        raise Failure('figures did not move under wrk: ' + '; '.join(problems) +
                      '\nrefreshes under load (requests, requests/s): ' +
                      str([(f['requests'], f['rps']) for f in loaded]) + '\nwrk:\n' + wrk_output)

    # After wrk: the rate falls back, and the counter accounts for wrk's requests.
    settled = wait_for_figures(page, f'requests/s to fall back under {IDLE_RPS} after wrk stopped',
                               lambda f: filled_in(f) and f['rps'] <= IDLE_RPS, 10, 0.25)
    served = settled['requests'] - idle['requests']
    # wrk does not count the answers to its last in-flight requests; the page polls ~1/s.
    slack = WRK_CONNECTIONS + int(settled['at'] - idle['at']) + 10
    if not wrk_requests <= served <= wrk_requests + slack:
        raise Failure(f'"requests served" grew by {served} while wrk completed {wrk_requests} '
                      f'(expected {wrk_requests}..{wrk_requests + slack})')
    # And the pixels: the table Chromium paints now is not the one it painted before the load.
    if page.screenshot_of('figures') == idle_table:
        raise Failure('the figures table was painted the same after the load as before it')
    print(f'after:  {settled}')
    print(f'wrk: {wrk_requests} requests in {wrk_seconds:.2f} s ({wrk_rate:.0f}/s); the page '
          f'showed {[f["rps"] for f in loaded]} requests/s under load; "requests served" grew by '
          f'{served}')


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    binary = os.path.abspath(sys.argv[1])
    signal.signal(signal.SIGALRM, on_watchdog)
    signal.signal(signal.SIGTERM, on_terminate)
    signal.alarm(WATCHDOG_SECONDS)
    started = time.monotonic()
    procs = Processes()
    workdir = tempfile.mkdtemp(prefix='greenhttp-browser-')
    try:
        run_test(binary, workdir, procs)
        print(f'PASS in {time.monotonic() - started:.1f} s')
        return 0
    except Failure as failure:
        print(f'FAIL: {failure}', file=sys.stderr)
        # On an overloaded machine (load 25 on 2 cores), chromium's network service was seen to
        # wait 12-20 s to send the page's request: the load average tells that case apart.
        print('load average: %.1f %.1f %.1f' % os.getloadavg(), file=sys.stderr)
        for name in ['greenhttp.log', 'chromium.log']:
            try:
                with open(os.path.join(workdir, name), errors='replace') as f:
                    # chromium complains at length that a container has no D-Bus: not news.
                    lines = [line for line in f if 'dbus/' not in line]
                tail = ''.join(lines)[-3000:]
                if tail.strip():
                    print(f'--- {name} (tail)\n{tail}', file=sys.stderr)
            except OSError:
                pass
        return 1
    finally:
        signal.alarm(0)
        procs.kill_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
