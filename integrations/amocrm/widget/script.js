/* crmwatch for amoCRM: the lead's warnings in the card's right panel (location lcard-1), and the
 * head of sales' dashboard as a full page (advanced_settings for a private integration,
 * widget_page — its own section in the left menu — for a public one).
 * Written to the widget SDK's callbacks; every call to crmwatch goes through $authorizedAjax,
 * which adds amoCRM's disposable token (X-Auth-Token) that crmwatch verifies. */
define([], function () {
  'use strict';

  /*@CRMWATCH_CARD_CORE@*/

  var BUILT_FOR = '/*@CRMWATCH_URL@*/';

  return function () {
    var self = this;
    var card = null;

    function baseUrl() {
      var settings = self.get_settings() || {};
      return String(settings.crmwatch_url || BUILT_FOR).replace(/\/+$/, '');
    }

    function leadId() {
      var data = window.AMOCRM && window.AMOCRM.data;
      var current = data && data.current_card;
      return current && current.id ? String(current.id) : null;
    }

    function strings() { return self.i18n('card'); }

    function parse(text) {
      try { return JSON.parse(text); } catch (e) { return null; }
    }

    function request(method, path, body) {
      var url = baseUrl() + '/widget/amocrm' + path + '?lang=' + encodeURIComponent(strings().lang);
      if (method === 'GET') { url += '&lead_id=' + encodeURIComponent(leadId()); }
      return new Promise(function (resolve) {
        self.$authorizedAjax({
          url: url,
          type: method,
          dataType: 'json',
          contentType: body ? 'application/json' : undefined,
          data: body ? JSON.stringify(body) : undefined
        }).done(function (data) {
          resolve({ status: 200, body: data });
        }).fail(function (xhr) {
          resolve({ status: (xhr && xhr.status) || 0, body: xhr && (xhr.responseJSON || parse(xhr.responseText)) });
        });
      });
    }

    // The dashboard: the disposable token is exchanged for a dashboard session (whose scope crmwatch
    // decides from is_admin / user_id), and the page is framed with the session in its URL fragment.
    function openDashboard() {
      var code = (self.get_settings() || {}).widget_code || 'crmwatch';
      var area = document.getElementById('work-area-' + code);
      if (!area) { return; }
      var t = self.i18n('dashboard');
      area.textContent = t.loading;
      self.$authorizedAjax({ url: baseUrl() + '/widget/amocrm/dashboard/session', type: 'POST', dataType: 'json' })
        .done(function (data) {
          area.textContent = '';
          var frame = document.createElement('iframe');
          // crmwatch's address as this widget knows it (its setting), not as the server names itself.
          frame.src = baseUrl() + '/dashboard/view?lang=' + encodeURIComponent(strings().lang) + '#s=' +
            encodeURIComponent(data.session);
          frame.title = t.menu;
          frame.className = 'crmwatch-dashboard-frame';
          frame.style.cssText = 'width:100%;height:calc(100vh - 80px);border:0;display:block';
          area.appendChild(frame);
        })
        .fail(function (xhr) {
          area.textContent = xhr && xhr.status === 401 ? t.denied : t.unavailable;
        });
    }

    this.callbacks = {
      advancedSettings: function () { openDashboard(); return true; },
      initMenuPage: function () { openDashboard(); return true; },
      render: function () {
        if (!leadId()) { return true; }
        self.render_template({
          caption: { class_name: 'crmwatch-caption' },
          body: '',
          render: '<div class="crmwatch-panel" id="crmwatch-panel-' + leadId() + '"></div>'
        });
        return true;
      },
      init: function () { return true; },
      bind_actions: function () {
        var root = document.getElementById('crmwatch-panel-' + leadId());
        if (root && !card) {
          card = CrmwatchCard.mount(root, { strings: strings(), lang: strings().lang, request: request, pollMs: 5000 });
        }
        return true;
      },
      settings: function () { return true; },
      onSave: function () { return true; },
      destroy: function () {
        if (card) { card.destroy(); card = null; }
      }
    };
    return this;
  };
});
