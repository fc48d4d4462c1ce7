/* The Bitrix24 deal tab: the card list, authenticated by the session token crmwatch put in the page. */
(function () {
  'use strict';
  var root = document.getElementById('crmwatch-card');
  var token = root.getAttribute('data-token');
  var base = root.getAttribute('data-api');
  var strings = JSON.parse(document.getElementById('crmwatch-strings').textContent);

  function request(method, path, body) {
    var init = { method: method, headers: { 'Authorization': 'Bearer ' + token } };
    if (body) { init.headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
    return fetch(base + path + '?lang=' + strings.lang, init).then(function (resp) {
      return resp.json().then(function (json) { return { status: resp.status, body: json }; },
                              function () { return { status: resp.status, body: null }; });
    }, function () { return { status: 0, body: null }; });
  }

  window.crmwatchCard = CrmwatchCard.mount(root, { strings: strings, lang: strings.lang, request: request,
                                                   pollMs: 5000 });
}());
