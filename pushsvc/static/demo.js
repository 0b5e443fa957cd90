/* The demo page's script (templates/index.html), on pushsvc.js and jQuery. A file of its own, not
 * inline, so the page is served with `Content-Security-Policy: script-src 'self'`; what the template
 * knows (the URL prefix) comes as data-* attributes on <body>. */
$(function () {
  "use strict";
  // Where pushsvc is mounted, from the page (data-pushsvc-url on <body>): no inline script needed.
  var BASE = document.body.getAttribute("data-pushsvc-url");
  var SESSION_KEY = "pushsvc-demo:session";
  var MAX_LOG = 500;
  var params = new URLSearchParams(window.location.search);
  // ?token= (a subscriber JWT, when PUSHSVC_JWT_SECRET is set) and ?publishToken= (PUSHSVC_PUBLISH_TOKEN).
  var token = params.get("token");
  var publishToken = params.get("publishToken");
  var stream = null;
  var clientsTimer = null;

  function loadSession() {
    try { return JSON.parse(localStorage.getItem(SESSION_KEY)) || {}; } catch (e) { return {}; }
  }
  function saveSession(changes) {
    var session = $.extend(loadSession(), changes);
    try { localStorage.setItem(SESSION_KEY, JSON.stringify(session)); } catch (e) { /* private mode */ }
  }

  var session = loadSession();
  $("#client-id").val(params.get("clientId") || session.clientId ||
                      "user-" + Math.random().toString(16).slice(2, 6));
  $("#group").val(params.get("group") || session.group || "");

  function clientId() { return $.trim($("#client-id").val()); }
  function group() { return $.trim($("#group").val()); }

  function clock(date) {
    var pad = function (n, w) { return String(n).padStart(w || 2, "0"); };
    return pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds()) + "." +
           pad(date.getMilliseconds(), 3);
  }

  function append($item) {
    var $log = $("#log");
    var atBottom = $log[0].scrollHeight - $log.scrollTop() - $log.outerHeight() < 40;
    $log.children(".empty").remove();
    $log.append($item);
    while ($log.children().length > MAX_LOG) $log.children().first().remove();
    if (atBottom) $log.scrollTop($log[0].scrollHeight);
  }

  function logEvent(e) {
    append($("<li>").addClass("entry").attr({"data-id": e.id, "data-name": e.name}).append(
      $("<time>").text(clock(e.time)),
      $("<span>").addClass("name").text(e.name),
      $("<code>").addClass("id").text(e.id || "no id"),
      $("<div>").addClass("data").text(e.data)));
  }

  function note(text, level) {
    append($("<li>").addClass("note " + (level || "")).append(
      $("<time>").text(clock(new Date())), $("<div>").addClass("data").text(text)));
  }

  function showState(s) {
    var label = {connecting: "connecting", open: "open", busy: "server busy", retrying: "retrying",
                 closed: "closed", refused: "refused"}[s.state] || s.state;
    if (s.state === "retrying" && s.delay) label += " in " + (s.delay / 1000).toFixed(1) + " s";
    $("#state").attr("data-state", s.state).text(label);
    $("#retries").text(s.retries);
    $("#last-id").text(s.lastEventId || "none");
    showRole(s);
    if (s.state === "refused") {
      var hint = {401: token ? " The token is not valid (expired, or signed with another secret)."
                             : " This server wants a subscriber token: open this page with ?token=<JWT>.",
                  403: " The token does not allow this client id or group.",
                  400: " Check the client id and group: no spaces, no slashes."}[s.status] || "";
      note("Refused: " + s.reason + "." + hint, "error");
    } else if (s.state === "closed" && s.reason) {
      note("Closed: " + s.reason + ".");
    }
    if (s.state === "open") refreshClients();
  }

  // Which tab holds the connection: pushsvc.js shares one stream among the tabs on the same client id
  // and group (see pushsvc.js); a browser without Web Locks gives each tab its own.
  function showRole(s) {
    var live = s.state !== "closed" && s.state !== "refused";
    var role = live ? s.role : "none";
    var label = {holder: "this tab holds the stream", follower: "shared from another tab",
                 alone: "own stream (not shared)", none: "no stream"}[role];
    $("#sharing").attr("data-role", role).text(label);
  }

  function subscribe() {
    var id = clientId();
    if (!id) { note("Enter a client id first.", "warn"); return; }
    if (stream) stream.close();
    var groups = group() ? [group()] : [];
    stream = PushSvc.subscribe({url: BASE, clientId: id, groups: groups, token: token,
                                events: (params.get("events") || "").split(",").filter(Boolean)});
    stream.on("state", showState);
    stream.on("*", function (e) {
      if (e.name === "reset") {
        note("Some missed events could not be replayed (" + e.reason + "); carrying on from here.", "warn");
      } else if (e.name === "busy") {
        note("The server is busy (" + e.reason + "); the browser comes back by itself.", "warn");
      } else if (e.name !== "close") {
        logEvent(e);
      }
      $("#last-id").text(stream.lastEventId || "none");
    });
    saveSession({clientId: id, group: group(), subscribed: true});
    note("Subscribing as " + id + (groups.length ? " in group " + groups[0] : "") +
         (stream.lastEventId ? ", resuming after " + stream.lastEventId : "") + ".");
    updateCurl();
  }

  function closeStream() {
    saveSession({subscribed: false});
    var current = stream;
    if (!current || current.state === "closed" || current.state === "refused") {
      note("Not subscribed.");
      return;
    }
    // Not connected right now (waiting to retry, or told to come back later): stop here at once.
    if (current.state !== "open") current.close();
    // The server ends every stream of this id, in every tab, with event: close, and answers the browser's
    // reconnect with 204; the stream closes itself when that event arrives. Closing here is the fallback.
    api("POST", "/close/" + encodeURIComponent(clientId())).always(function () {
      setTimeout(function () { current.close(); }, 2000);
    }).fail(function () { current.close(); });
  }

  function send() {
    var body = {data: $("#content").val()};
    var target = $("input[name=target]:checked").val();
    if (target === "group") {
      if (!group()) { note("Enter a group first.", "warn"); return; }
      body.group = group();
    } else if (target === "broadcast") {
      body.broadcast = true;
    } else {
      body.to = clientId();
    }
    var name = $.trim($("#event-name").val());
    if (name) {
      body.event = name;
      if (stream) stream.listen(name);  // EventSource only reports the event names it listens to
    }
    api("POST", "/publish", body).done(function () { $("#content").val("").trigger("focus"); });
  }

  function api(method, path, body) {
    var headers = publishToken ? {Authorization: "Bearer " + publishToken} : {};
    return $.ajax({url: BASE + path, method: method, headers: headers, dataType: "json",
                   contentType: "application/json", data: body ? JSON.stringify(body) : undefined})
      .fail(function (xhr) {
        var error = (xhr.responseJSON && xhr.responseJSON.error) || xhr.statusText || "no answer";
        note(method + " " + path + ": " + (xhr.status || "") + " " + error, "error");
      });
  }

  function refreshClients() {
    clearTimeout(clientsTimer);
    clientsTimer = setTimeout(refreshClients, 2000);
    if (document.hidden) return;
    var headers = publishToken ? {Authorization: "Bearer " + publishToken} : {};
    $.ajax({url: BASE + "/clients", headers: headers, dataType: "json"}).done(function (listing) {
      var $body = $("#clients tbody").empty();
      var me = clientId();
      $.each(listing.clients || [], function (_, c) {
        $body.append($("<tr>").attr("data-client", c.id).toggleClass("me", c.id === me).append(
          $("<td>").text(c.id), $("<td>").addClass("connections").text(c.connections),
          $("<td>").text((c.groups || []).join(", "))));
      });
      var plural = function (n, word) { return n + " " + word + (n === 1 ? "" : "s"); };
      $("#clients-summary").text(plural(listing.count, "client") + ", " + plural(listing.connections, "stream"));
    }).fail(function (xhr) {
      $("#clients-summary").text(xhr.status === 401 || xhr.status === 403 ? "needs ?publishToken=" : "unavailable");
    });
  }

  function updateCurl() {
    var origin = window.location.origin;
    $("#curl").text("curl -H 'Content-Type: application/json' -d '{\"to\": " + JSON.stringify(clientId()) +
                    ", \"data\": \"hello\"}' " + origin + BASE + "/publish");
  }

  $("#subscribe-form").on("submit", function (e) { e.preventDefault(); subscribe(); });
  $("#close").on("click", closeStream);
  $("#send-form").on("submit", function (e) { e.preventDefault(); send(); });
  $("#clear").on("click", function () { $("#log").empty(); });
  $("#client-id, #group").on("change", function () { saveSession({clientId: clientId(), group: group()}); updateCurl(); });
  $(document).on("visibilitychange", function () { if (!document.hidden) refreshClients(); });

  // For the console (and the tests): demo.stream is the PushSvc stream in use.
  window.demo = {get stream() { return stream; }, subscribe: subscribe};

  updateCurl();
  refreshClients();
  // After a reload, carry on where the page left off: the stored last event id fills the gap.
  if (session.subscribed || params.get("subscribe") === "1") subscribe();
});
