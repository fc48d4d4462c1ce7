// The slice of amoCRM's widget SDK that the crmwatch widget uses.
var CARD_HOST = JSON.parse(document.getElementById('card-host').textContent);
window.AMOCRM = { data: { current_card: { id: CARD_HOST.leadId }, current_entity: 'leads' },
                  lang_id: CARD_HOST.lang, widgets: { list: {} } };
function makeDeferred(promise) {
  var d = { done: function (cb) { promise.then(function (r) { if (r.ok) cb(r.body, 'success', r.xhr); }); return d; },
            fail: function (cb) { promise.then(function (r) { if (!r.ok) cb(r.xhr, 'error', ''); }); return d; } };
  return d;
}
function authorizedAjax(opts) {
  // amoCRM asks its server for a fresh disposable token and adds it as X-Auth-Token.
  var p = fetch('/card/token').then(function (r) { return r.text(); }).then(function (token) {
    var headers = { 'X-Auth-Token': token };
    if (opts.contentType) headers['Content-Type'] = opts.contentType;
    return fetch(opts.url, { method: opts.type || opts.method || 'GET', headers: headers, body: opts.data || undefined });
  }).then(function (resp) {
    return resp.text().then(function (text) {
      var json = null; try { json = JSON.parse(text); } catch (e) {}
      var xhr = { status: resp.status, responseText: text, responseJSON: json };
      return { ok: resp.status >= 200 && resp.status < 300, body: json, xhr: xhr };
    });
  }, function () { return { ok: false, body: null, xhr: { status: 0, responseText: '', responseJSON: null } }; });
  return makeDeferred(p);
}
window.define = function (deps, factory) {
  var Widget = factory();
  var w = Object.create({
    get_settings: function () { return CARD_HOST.settings; },
    i18n: function (key) { return CARD_HOST.i18n[key]; },
    system: function () { return { area: CARD_HOST.area || 'lcard', amouser_id: String(CARD_HOST.userId), subdomain: CARD_HOST.subdomain }; },
    render_template: function (params) {
      var block = document.createElement('div');
      block.className = 'card-widgets__widget';
      block.setAttribute('data-widget', 'crmwatch');
      var cap = document.createElement('div');
      cap.className = 'card-widgets__widget__caption';
      cap.textContent = CARD_HOST.i18n.widget.name;
      block.appendChild(cap);
      var body = document.createElement('div');
      body.className = 'card-widgets__widget__body';
      body.innerHTML = params.body + (params.render || '');
      block.appendChild(body);
      document.getElementById('card_widgets_panel').appendChild(block);
    },
    $authorizedAjax: authorizedAjax
  });
  Widget.call(w);
  window.crmwatchWidget = w;
  if (CARD_HOST.area === 'advanced_settings') {
    w.callbacks.advancedSettings();
  } else if (CARD_HOST.area === 'widget_page') {
    w.callbacks.initMenuPage({ location: 'widget_page', item_code: 'crmwatch_dashboard' });
  } else {
    ['render', 'init', 'bind_actions'].forEach(function (name) { w.callbacks[name](); });
  }
};
