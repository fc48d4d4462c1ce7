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
    '.cw-menu[hidden]{display:none}',
    /* Severity in words too, not by colour alone (colour-blind readers, printouts). */
    '.cw-sev{display:inline-block;font-size:11px;font-weight:600;text-transform:uppercase;letter-spacing:.03em;padding:0 5px;margin-right:6px;border-radius:3px;vertical-align:1px;background:#f0a020;color:#1f2d3d}',
    '.cw-sev-critical{background:#d93025;color:#fff}',
    '.cw-sev-info{background:#4a90d9;color:#fff}',
    '.cw-notice{display:flex;align-items:center;justify-content:space-between;gap:8px;background:#eef5fc;border-radius:4px;padding:6px 10px;margin:0 0 8px}',
    '.cw-snoozed{margin-top:4px}',
    '.cw-snoozed-toggle{font:inherit;font-size:12px;background:none;border:0;padding:2px 0;color:#2a6cb0;cursor:pointer;text-decoration:underline}',
    '.cw-snoozed-list{list-style:none;margin:6px 0 0;padding:0}',
    '.cw-snoozed-list[hidden]{display:none}',
    '.cw-snoozed-item{border-left:4px solid #b8c4cf;background:#f5f7f9;margin:0 0 6px;padding:6px 10px;border-radius:0 4px 4px 0}',
    '@media print{.cw-actions,.cw-notice button,.cw-snoozed-toggle{display:none}.cw-snoozed-list[hidden]{display:block}}'
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

  function fill(template, values) {
    return String(template).replace(/\{(\w+)\}/g, function (m, k) { return values[k] !== undefined ? values[k] : m; });
  }

  /* opts: {strings, lang, request(method, path, body) -> Promise<{status, body}>, pollMs, undoMs} */
  function mount(root, opts) {
    injectStyle();
    var t = opts.strings;
    var lang = opts.lang || 'ru';
    var pollMs = opts.pollMs || 5000;
    var undoMs = opts.undoMs || 8000;
    var hidden = {};       // ids acknowledged or snoozed here, hidden until the server agrees
    var labels = {};       // the snooze menu's labels from crmwatch ("до пн 09:00" on a Friday)
    var snoozedOpen = false;
    var timer = null;
    var busy = false;
    var stopped = false;

    root.innerHTML = '';
    var box = el('div', 'cw-root');
    box.setAttribute('data-crmwatch', 'card');
    var state = el('div', 'cw-state cw-loading', t.loading);
    var notices = el('div', 'cw-notices');
    var list = el('ul', 'cw-list');
    var snoozedBox = el('div', 'cw-snoozed');
    box.appendChild(state);
    box.appendChild(notices);
    box.appendChild(list);
    box.appendChild(snoozedBox);
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

    /* "Принято." / "Отложено до пн 09:00." with an undo, for a few seconds. */
    function notice(item, text) {
      var row = el('div', 'cw-notice');
      row.setAttribute('data-notice-for', String(item.id));
      row.appendChild(el('span', 'cw-notice-text', text));
      var undo = el('button', 'cw-btn cw-undo', t.undo);
      undo.type = 'button';
      var gone = setTimeout(function () { row.parentNode && row.parentNode.removeChild(row); }, undoMs);
      undo.onclick = function () {
        clearTimeout(gone);
        undo.disabled = true;
        reopen(item.id).then(function () { row.parentNode && row.parentNode.removeChild(row); });
      };
      row.appendChild(undo);
      notices.appendChild(row);
    }

    function reopen(id) {
      return opts.request('POST', '/findings/' + id + '/reopen', null).then(function (res) {
        if (res.status !== 200) { showState('error', errorText(res)); }
        delete hidden[id];
        return refresh();
      });
    }

    function act(item, li, path, body) {
      var buttons = li.querySelectorAll('button');
      for (var i = 0; i < buttons.length; i++) { buttons[i].disabled = true; }
      hidden[item.id] = true;
      li.parentNode && li.parentNode.removeChild(li);
      return opts.request('POST', path, body).then(function (res) {
        if (res.status === 200) {
          var b = res.body || {};
          notice(item, b.status === 'snoozed' ? fill(t.done_snooze, { until: b.until_label || '' }) : t.done_ack);
          return refresh();
        }
        if (res.status === 409 || res.status === 404) { return refresh(); }
        delete hidden[item.id];
        showState('error', errorText(res));
        return refresh(true);
      });
    }

    function severity(item) {
      var level = item.severity || 'warning';
      return el('span', 'cw-sev cw-sev-' + level, t['severity_' + level] || level);
    }

    /* One finding's lines: severity word and title, message, and when (since, or until). */
    function entry(cls, item, when) {
      var li = el('li', cls);
      li.setAttribute('data-finding-id', String(item.id));
      var title = el('div', 'cw-title');
      title.appendChild(severity(item));
      title.appendChild(document.createTextNode(item.title));
      li.appendChild(title);
      li.appendChild(el('div', 'cw-message', item.message));
      li.appendChild(el('div', 'cw-since', when));
      return li;
    }

    function renderItem(item) {
      var li = entry('cw-item cw-' + (item.severity || 'warning'), item, formatSince(item.since, lang, t));
      var actions = el('div', 'cw-actions');
      var ack = el('button', 'cw-btn cw-ack', t.acknowledge);
      ack.type = 'button';
      ack.onclick = function () { act(item, li, '/findings/' + item.id + '/ack', null); };
      var snooze = el('button', 'cw-btn cw-snooze', t.snooze);
      snooze.type = 'button';
      var menu = el('div', 'cw-menu');
      menu.hidden = true;
      [['1h', t.snooze_1h], ['tomorrow', labels.tomorrow || t.snooze_tomorrow], ['1w', t.snooze_1w]].forEach(function (p) {
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

    function renderSnoozed(snoozed) {
      snoozedBox.innerHTML = '';
      if (!snoozed.length) { snoozedOpen = false; return; }
      var toggle = el('button', 'cw-snoozed-toggle',
                      fill(t.snoozed_line, { count: snoozed.length, until: snoozed[0].until_label || '' }));
      toggle.type = 'button';
      var more = el('ul', 'cw-snoozed-list');
      more.hidden = !snoozedOpen;
      toggle.onclick = function () { snoozedOpen = !snoozedOpen; more.hidden = !snoozedOpen; };
      snoozed.forEach(function (item) {
        var li = entry('cw-snoozed-item', item, item.until_label || '');
        var back = el('button', 'cw-btn cw-unsnooze', t.unsnooze);
        back.type = 'button';
        back.onclick = function () { back.disabled = true; reopen(item.id); };
        var actions = el('div', 'cw-actions');
        actions.appendChild(back);
        li.appendChild(actions);
        more.appendChild(li);
      });
      snoozedBox.appendChild(toggle);
      snoozedBox.appendChild(more);
    }

    function render(body) {
      var items = body.items || [];
      var snoozed = body.snoozed || [];
      labels = body.snooze_labels || {};
      list.innerHTML = '';
      var shown = items.filter(function (i) { return !hidden[i.id]; });
      shown.forEach(function (i) { list.appendChild(renderItem(i)); });
      renderSnoozed(snoozed);
      // "All fine" only when nothing is open and nothing is merely put off.
      if (shown.length || snoozed.length) { showState('ok', ''); } else { showState('ok', t.empty); }
      box.setAttribute('data-count', String(shown.length));
      box.setAttribute('data-snoozed', String(snoozed.length));
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
        render(res.body);
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
