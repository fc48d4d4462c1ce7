/* crmwatch card list: the warnings of one deal with Acknowledge / Snooze, shared by the amoCRM
 * widget (wrapped into its SDK callbacks at build time) and the Bitrix24 deal tab.
 * Plain ES5 and the DOM only: it runs inside the CRM's page, which brings its own libraries. */
var CrmwatchCard = (function () {
  'use strict';

  var CSS = [
    '.cw-root{font:13px/1.35 -apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#1f2d3d;max-width:100%;box-sizing:border-box}',
    '.cw-root *{box-sizing:border-box}',
    '.cw-state{padding:10px 12px;border-radius:4px;margin:4px 0}',
    '.cw-ok{background:#eaf7ee;color:#1e6b35}',
    '.cw-error{background:#fdecea;color:#8a1c12;font-weight:600}',
    '.cw-loading{color:#6b7a89}',
    '.cw-list{list-style:none;margin:0;padding:0}',
    '.cw-item{border-left:4px solid #f0a020;background:#fff8ec;margin:0 0 8px;padding:8px 10px;border-radius:0 4px 4px 0;word-wrap:break-word}',
    '.cw-critical{border-color:#d93025;background:#fdecea}',
    '.cw-warning{border-color:#f0a020;background:#fff8ec}',
    '.cw-info{border-color:#4a90d9;background:#eef5fc}',
    '.cw-title{font-weight:600;margin-bottom:2px}',
    '.cw-since{color:#6b7a89;font-size:12px;margin-top:4px}',
    '.cw-actions{margin-top:6px;display:flex;flex-wrap:wrap;gap:6px}',
    '.cw-btn{font:inherit;font-size:12px;padding:4px 10px;border:1px solid #b8c4cf;border-radius:3px;background:#fff;color:#1f2d3d;cursor:pointer}',
    '.cw-btn:hover{background:#f0f4f7}',
    '.cw-btn[disabled]{opacity:.5;cursor:default}',
    '.cw-menu{display:flex;flex-wrap:wrap;gap:6px;width:100%}',
    '.cw-menu[hidden]{display:none}'
  ].join('\n');

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = text; }
    return node;
  }

  function injectStyle() {
    if (document.getElementById('crmwatch-card-style')) { return; }
    var style = el('style');
    style.id = 'crmwatch-card-style';
    style.textContent = CSS;
    (document.head || document.documentElement).appendChild(style);
  }

  function formatSince(iso, lang, t) {
    var at = new Date(iso);
    if (isNaN(at.getTime())) { return ''; }
    var opts = { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' };
    var text;
    try { text = at.toLocaleString(lang === 'en' ? 'en-GB' : 'ru-RU', opts); } catch (e) { text = at.toISOString(); }
    return t.since + ' ' + text;
  }

  /* opts: {strings, lang, request(method, path, body) -> Promise<{status, body}>, pollMs} */
  function mount(root, opts) {
    injectStyle();
    var t = opts.strings;
    var lang = opts.lang || 'ru';
    var pollMs = opts.pollMs || 5000;
    var hidden = {};       // ids acknowledged or snoozed here, hidden until the server agrees
    var timer = null;
    var busy = false;
    var stopped = false;

    root.innerHTML = '';
    var box = el('div', 'cw-root');
    box.setAttribute('data-crmwatch', 'card');
    var state = el('div', 'cw-state cw-loading', t.loading);
    var list = el('ul', 'cw-list');
    box.appendChild(state);
    box.appendChild(list);
    root.appendChild(box);

    function showState(kind, text) {
      state.className = 'cw-state cw-' + kind;
      state.textContent = text;
      state.hidden = !text;
    }

    function errorText(res) {
      var code = res && res.body && res.body.code;
      if (!res || res.status === 0 || res.status >= 500) { return t.unavailable; }
      if (code === 'token_expired') { return t.expired; }
      if (res.status === 401 || res.status === 403) { return t.denied; }
      return t.failed;
    }

    function menuOpen() { return !!box.querySelector('.cw-menu:not([hidden])'); }

    function act(item, li, path, body) {
      var buttons = li.querySelectorAll('button');
      for (var i = 0; i < buttons.length; i++) { buttons[i].disabled = true; }
      hidden[item.id] = true;
      li.parentNode && li.parentNode.removeChild(li);
      if (!list.children.length) { showState('ok', t.empty); }
      return opts.request('POST', path, body).then(function (res) {
        if (res.status === 200 || res.status === 409 || res.status === 404) { return refresh(); }
        delete hidden[item.id];
        showState('error', errorText(res));
        return refresh(true);
      });
    }

    function renderItem(item) {
      var li = el('li', 'cw-item cw-' + (item.severity || 'warning'));
      li.setAttribute('data-finding-id', String(item.id));
      li.appendChild(el('div', 'cw-title', item.title));
      li.appendChild(el('div', 'cw-message', item.message));
      li.appendChild(el('div', 'cw-since', formatSince(item.since, lang, t)));
      var actions = el('div', 'cw-actions');
      var ack = el('button', 'cw-btn cw-ack', t.acknowledge);
      ack.type = 'button';
      ack.onclick = function () { act(item, li, '/findings/' + item.id + '/ack', null); };
      var snooze = el('button', 'cw-btn cw-snooze', t.snooze);
      snooze.type = 'button';
      var menu = el('div', 'cw-menu');
      menu.hidden = true;
      [['1h', t.snooze_1h], ['tomorrow', t.snooze_tomorrow], ['1w', t.snooze_1w]].forEach(function (p) {
        var b = el('button', 'cw-btn cw-snooze-' + p[0], p[1]);
        b.type = 'button';
        b.onclick = function () { act(item, li, '/findings/' + item.id + '/snooze', { preset: p[0] }); };
        menu.appendChild(b);
      });
      snooze.onclick = function () { menu.hidden = !menu.hidden; };
      actions.appendChild(ack);
      actions.appendChild(snooze);
      actions.appendChild(menu);
      li.appendChild(actions);
      return li;
    }

    function render(items) {
      list.innerHTML = '';
      var shown = items.filter(function (i) { return !hidden[i.id]; });
      shown.forEach(function (i) { list.appendChild(renderItem(i)); });
      if (shown.length) { showState('ok', ''); } else { showState('ok', t.empty); }
      box.setAttribute('data-count', String(shown.length));
    }

    function refresh(keepError) {
      if (stopped || busy) { return Promise.resolve(); }
      busy = true;
      return opts.request('GET', '/findings', null).then(function (res) {
        busy = false;
        if (stopped) { return; }
        if (res.status !== 200) {
          list.innerHTML = '';
          box.setAttribute('data-count', '0');
          showState('error', errorText(res));
          return;
        }
        if (menuOpen()) { return; }  // do not pull the menu from under the manager's cursor
        var items = res.body.items || [];
        var ids = {};
        items.forEach(function (i) { ids[i.id] = true; });
        Object.keys(hidden).forEach(function (id) { if (!ids[id]) { delete hidden[id]; } });
        render(items);
        if (keepError === true) { showState('error', t.failed); }
      }, function () {
        busy = false;
        showState('error', t.unavailable);
      });
    }

    function tick() {
      if (!document.hidden) { refresh(); }
    }

    refresh();
    timer = setInterval(tick, pollMs);
    return {
      refresh: refresh,
      destroy: function () { stopped = true; if (timer) { clearInterval(timer); } root.innerHTML = ''; }
    };
  }

  return { mount: mount };
}());
