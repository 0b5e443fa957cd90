/*! pushsvc.js: a small client for pushsvc streams. No build step, no dependency.
 *
 *   <script src="/sse/static/pushsvc.js"></script>
 *   var stream = PushSvc.subscribe({url: "/sse", clientId: "alice", groups: ["room"]});
 *   stream.on("message", function (e) { console.log(e.id, e.name, e.data); });
 *   stream.on("state", function (s) { console.log(s.state, s.retries); });
 *   stream.close();
 *
 * The browser's own EventSource does the streaming. This script adds what a bare EventSource lacks:
 *  - a 502/503 from a proxy or the server stops an EventSource for good: it is rebuilt, with capped,
 *    jittered backoff, after a HEAD request to the same URL says the server takes streams again;
 *    a 400/401/403 is final ("refused"), as retrying cannot help;
 *  - `event: close` ends the stream for good: no reconnect, and the close event's id (which the server
 *    would answer 204) is never kept as a resume point;
 *  - `event: reset` (the gap could not be filled) and `event: busy` (come back later) are reported;
 *  - the last event id is kept in localStorage, so a reload resumes where the page left off.
 *
 * One-time tickets (PUSHSVC_JWT_SECRET set, a page that should not put its long-lived token in a URL):
 *
 *   PushSvc.subscribe({url: "/sse", clientId: "alice", ticketUrl: true, token: jwt});  // POST /sse/tickets
 *   PushSvc.subscribe({url: "/sse", clientId: "alice", ticket: function () {
 *     return fetch("/sse/tickets", {method: "POST", headers: {Authorization: "Bearer " + jwt}});
 *   }});
 *
 * A ticket is good for one subscribe, so with a ticket source the script, not the browser, reconnects:
 * every connection gets a fresh ticket; on any error the EventSource is closed at once (its own reconnect
 * would send the spent ticket again and end in a 401) and rebuilt after a jittered backoff, or after the
 * delay an `event: busy` asked for, resuming with ?lastEventId=. A 401/403 (any final 4xx) from the
 * ticket endpoint is "refused"; a 5xx, a network error or no answer within ticketTimeout is retried.
 *
 * States (stream.state; "state" handlers get {state, retries, delay, status, reason, lastEventId}):
 *
 *   connecting  a stream (or its ticket) is on the way, or the browser is reconnecting by itself
 *   open        the stream is open: events flow
 *   busy        the server said `event: busy`: its stream ends, and comes back after `delay` ms
 *   retrying    waiting `delay` ms (the backoff) before trying again
 *   closed      final: `event: close`, stream.close(), or a probe answered 204
 *   refused     final: the server or the ticket endpoint said no for good (400, 401, 403, ...)
 *
 * Transitions, all made by _setState; every reconnect goes through _reconnect with a [reason]:
 *
 *   from        to          on
 *   ----------  ----------  -------------------------------------------------------------------------------
 *   (new)       connecting  the turn after subscribe(), and every stream this script builds
 *   connecting  open        the EventSource opened (the backoff starts over from minDelay)
 *   open        busy        `event: busy` (its stream ends next)
 *   open        connecting  [ended] the stream ended: a cut, or a server's drain before a restart
 *   connecting  connecting  [lost] the connection failed on the way, and the browser tries again
 *   connecting  retrying    [lost] the same with a ticket source: the script tries again after a backoff
 *   busy        busy        [busy] that stream ended; the browser, or the script, is back after `delay`
 *   live        retrying    [failed] a non-200 answer: EventSource gave up; backoff, then a HEAD probe
 *   retrying    retrying    [unavailable] the probe got a 5xx, 408, 425, 429 or no answer: probe again later
 *   retrying    connecting  the probe got a 2xx
 *   connecting  retrying    [ticket-failed] no ticket for now (5xx, network, timeout): backoff, ask again
 *   live        closed      `event: close`, stream.close(), or the probe got 204
 *   live        refused     the probe, or the ticket source, got a final 4xx
 *
 * "live" is any state but the two final ones: entering those stops every timer and connection, and
 * nothing leaves them. Without a ticket source, [ended], [lost] and [busy] leave the wait to the browser's
 * EventSource (the server's `retry:`, then Last-Event-ID); with one, the script closes it at once and
 * builds the next stream itself. A restart reads as [ended], then [busy] (reason "restarting") until the
 * new worker takes streams. retries counts every reconnect, whoever makes it.
 *
 * Only the connection half (_connect to _head) talks to the network, and it reports through _setState
 * and _receive alone: the seam where the stream is shared between tabs.
 *
 * Tabs share one stream (shared: true, the default). Over HTTP/1.1 a browser opens at most six
 * connections per host and every EventSource holds one, so a seventh tab with its own stream would not
 * even load. The tabs of one browser (same origin) that subscribe to the same url, client id and groups
 * (the stream key) elect one holder with a Web Lock named by that key: the holder runs the connection
 * half above; the others (followers) wait in the lock's queue. A BroadcastChannel of the same name carries
 * what the holder's connection reports (every event, and every state change not caused by an event) to
 * the followers, which run it through the same _receive and _setState: every tab sees the same events,
 * once each (deduplicated by id), and the same state notifications. Followers tell the others the event
 * names they listen to, so any holder listens to them all; each tab reports only its own names.
 *
 *   the holder goes away   closed, reloaded or crashed: the browser frees its lock and the next waiter
 *                          takes over at once, resuming from the last event id it saw (every tab sees
 *                          them all), so nothing is lost; what comes twice is dropped by id. With a
 *                          ticket source, the new holder buys its own ticket.
 *   `event: close`, and refused
 *                          reach every tab as they reach the holder: all are final, and the holder keeps
 *                          its lock for CLOSE_LINGER_MS more, so no follower takes over meanwhile
 *   stream.close()         ends this tab's subscription only: a follower leaves the queue, a holder
 *                          closes its EventSource and frees the lock for the next tab (the last one out
 *                          closes the connection for good)
 *
 * Without Web Locks (an old browser, or a page that is not a secure context: plain http:// on a host
 * other than localhost) or BroadcastChannel, and with shared: false, each tab has a stream of its own.
 * stream.role says which: "holder", "follower" or "alone"; "state" notifications carry it too.
 */
(function (root) {
  "use strict";

  var CLOSE_MARK = ".close";
  // Handled here, listened to on every EventSource.
  var BUILTIN = ["message", "close", "reset", "busy"];
  // Of those, the ones that end or explain a stream: their ids are resume points, not events.
  var CONTROL = {close: 1, reset: 1, busy: 1};
  // Statuses a proxy or a restarting server gives for a moment; anything else 4xx is final.
  var TRANSIENT = {0: 1, 408: 1, 425: 1, 429: 1, 500: 1, 502: 1, 503: 1, 504: 1};
  var FINAL = {closed: 1, refused: 1};
  // Server-side ends (`event: close`, refused): how long the holder keeps the lock after telling the
  // followers, so none of them takes over (and reconnects) before it has heard.
  var CLOSE_LINGER_MS = 1000;
  // Event ids remembered per tab to drop a second copy: after a takeover, the new holder's resume and the
  // old holder's last frames may both bring the same few events.
  var SEEN_IDS = 1000;
  // The reconnect strategy, one rule per reason a connection is gone: the state meanwhile, how long to
  // wait ("hint": the delay `event: busy` asked for, else the backoff) and what to try then ("probe": a
  // HEAD first, as only its status tells a proxy's 502 from a 401; "connect": a new stream at once).
  var RECONNECT = {
    ended:           {state: "connecting", wait: "backoff", then: "connect"},
    lost:            {state: "retrying",   wait: "backoff", then: "connect"},
    busy:            {state: "busy",       wait: "hint",    then: "connect"},
    failed:          {state: "retrying",   wait: "backoff", then: "probe"},
    unavailable:     {state: "retrying",   wait: "backoff", then: "probe"},
    "ticket-failed": {state: "retrying",   wait: "backoff", then: "connect"}
  };
  var DEFAULTS = {
    url: "/sse",            // where pushsvc is mounted (PUSHSVC_URL_PREFIX), absolute or relative
    clientId: null,
    groups: [],
    token: null,            // a subscriber JWT, sent as ?token= (EventSource cannot set headers);
                            // with a ticket source it never goes into a URL (ticketUrl sends it as a header)
    ticket: null,           // function () -> a ticket, or a Promise of one, or of {ticket: ...}, or of the
                            // fetch Response of POST <url>/tickets; called afresh for every connection
    ticketUrl: null,        // or: POST here for each ticket (true: <url>/tickets), with token as Bearer
    headers: null,          // more headers for that POST: an object, or a function returning one
    ticketTimeout: 10000,   // a ticket not had within this many ms counts as a failed attempt
    events: [],             // named events to listen to besides message/close/reset/busy
    lastEventId: null,      // resume from this id instead of the stored one
    storage: true,          // keep the last event id in localStorage (false: do not)
    withCredentials: false, // send cookies cross-origin (a pushsvc_token cookie)
    minDelay: 1000,         // backoff after a failed connection: first delay, in ms...
    maxDelay: 30000,        // ...doubling up to this
    shared: true            // share one stream with the other tabs on the same key (false: a stream
                            // of its own); see the top of this file
  };

  function stripCloseMark(id) {
    return id && id.slice(-CLOSE_MARK.length) === CLOSE_MARK ? id.slice(0, -CLOSE_MARK.length) : id;
  }

  function httpError(status, reason) {
    var error = new Error(reason);
    error.status = status;
    return error;
  }

  // What a ticket source gave, down to the ticket: a string, {ticket}, or the endpoint's fetch Response.
  function ticketOf(answer) {
    if (typeof answer === "string" && answer) return answer;
    if (answer && typeof answer.json === "function" && typeof answer.status === "number") {
      if (!answer.ok) throw httpError(answer.status, "the ticket endpoint answered HTTP " + answer.status);
      return answer.json().then(ticketOf);
    }
    if (answer && typeof answer.ticket === "string" && answer.ticket) return answer.ticket;
    throw httpError(0, "the ticket source gave no ticket");
  }

  // The ticket source of the ticketUrl option: a POST with the token (or other headers) per ticket.
  function ticketFetcher(o) {
    var url = o.ticketUrl === true ? o.url + "/tickets" : String(o.ticketUrl);
    return function () {
      var headers = {};
      var extra = typeof o.headers === "function" ? o.headers() : o.headers;
      for (var name in extra || {}) headers[name] = extra[name];
      if (o.token) headers.Authorization = "Bearer " + o.token;
      return root.fetch(url, {method: "POST", headers: headers, cache: "no-store",
                              credentials: o.withCredentials ? "include" : "same-origin"});
    };
  }

  function parseJSON(text) {
    try { return JSON.parse(text); } catch (e) { return null; }
  }

  function localStore() {
    try {
      var probe = "pushsvc:probe";
      root.localStorage.setItem(probe, probe);
      root.localStorage.removeItem(probe);
      return root.localStorage;
    } catch (e) {
      return null;  // private mode, or storage disabled: resume works within the page only
    }
  }

  function canShare() {
    var nav = root.navigator;
    return !!(nav && nav.locks && typeof nav.locks.request === "function" &&
              typeof root.BroadcastChannel === "function" && typeof root.AbortController === "function");
  }

  // What decides which events a stream gets: the absolute URL (so "/sse" and "https://host/sse" on one
  // origin are one key), the client id and the groups, in any order.
  function streamKey(o) {
    var url = o.url;
    try { url = new root.URL(o.url || "/", root.location.href).href; } catch (e) { /* not in a page */ }
    return "pushsvc:stream:" + JSON.stringify([url, String(o.clientId), o.groups.slice().sort()]);
  }

  function Stream(options) {
    var o = {};
    var key;
    for (key in DEFAULTS) o[key] = DEFAULTS[key];
    for (key in options || {}) o[key] = options[key];
    if (!o.clientId) throw new Error("pushsvc: clientId is required");
    o.url = String(o.url).replace(/\/+$/, "");
    o.groups = [].concat(o.groups || []).filter(Boolean);
    this.options = o;
    this.state = "connecting";  // where a stream starts; from here on only _setState changes it
    this._detail = {};          // what came with the state: delay, status, reason
    this.retries = 0;           // reconnects since subscribe, by the browser or by this script
    this._attempt = 0;          // failed connections in a row, for the backoff
    this._handlers = {};
    this._names = BUILTIN.concat(o.events || []);  // the names this tab reports
    this._wanted = this._names.slice();             // ...and what a holder listens to: every tab's
    this._seen = {};                                // ids of events delivered, the last SEEN_IDS of them
    this._seenOrder = [];
    this._source = null;
    this._timer = null;
    this._ticketTimer = null;
    this._turn = 0;           // ticket requests so far: an answer to an older one is ignored
    this._tickets = typeof o.ticket === "function" ? o.ticket : (o.ticketUrl ? ticketFetcher(o) : null);
    this._store = o.storage === false ? null : (o.storage === true ? localStore() : o.storage);
    this._storeKey = "pushsvc:lastEventId:" + o.url + ":" + o.clientId;
    this.lastEventId = stripCloseMark(o.lastEventId || this._load() || "");
    this.shared = o.shared !== false && canShare();
    this.role = this.shared ? "follower" : "alone";  // until the lock is granted
    this.key = streamKey(o);
    this._tab = Math.random().toString(36).slice(2) + Date.now().toString(36);
    this._channel = null;
    this._abort = null;     // leaves the lock's queue
    this._release = null;   // frees the lock once held
    this._relaying = true;  // a holder tells the followers its states; not while in _receive
    this._byPage = false;   // stream.close() was called
    // Start on the next turn, so handlers attached right after subscribe() see every state and event.
    var self = this;
    this._timer = setTimeout(function () {
      self._timer = null;
      if (self.shared) self._join(); else self._connect();
    }, 0);
  }

  Stream.prototype = {
    /** Call ``handler(event)`` for events named ``name`` ("message" for unnamed ones), or "*" for all;
     *  "state" handlers get ``{state, retries, delay, status, reason, lastEventId}``. Returns the stream. */
    on: function (name, handler) {
      (this._handlers[name] = this._handlers[name] || []).push(handler);
      if (name !== "*" && name !== "state") this.listen(name);
      return this;
    },

    /** Also receive events named ``name`` (EventSource only reports names it is told about). */
    listen: function (name) {
      if (this._names.indexOf(name) < 0) {
        this._names.push(name);
        this._want([name]);
        this._post({type: "names", names: [name]});
      }
      return this;
    },

    /** Stop for good: this tab's stream ends and nothing reconnects. A tab that holds a shared stream
     *  hands it to the next tab instead; the others carry on. */
    close: function () {
      this._byPage = true;  // not a state for the other tabs: they carry on without this one
      this._setState("closed", {reason: "closed by the page"});
    },

    /** The subscribe URL, with ``ticket`` (one-time, from the ticket source) in place of the token. */
    subscribeUrl: function (ticket) {
      var o = this.options;
      var query = o.groups.map(function (g) { return "group=" + encodeURIComponent(g); });
      // A fresh EventSource cannot send Last-Event-ID; the server takes ?lastEventId= instead. The
      // browser's own reconnects send the header, which the server prefers, so this never goes stale;
      // with tickets there are none, and every EventSource is built here with the last id seen.
      if (this.lastEventId) query.push("lastEventId=" + encodeURIComponent(this.lastEventId));
      if (ticket) query.push("ticket=" + encodeURIComponent(ticket));
      else if (o.token && !this._tickets) query.push("token=" + encodeURIComponent(o.token));
      return o.url + "/subscribe/" + encodeURIComponent(o.clientId) + (query.length ? "?" + query.join("&") : "");
    },

    // -- connection ---------------------------------------------------------------------------------

    _connect: function (announced) {
      if (!this._live()) return;
      if (!announced) this._setState("connecting");
      if (!this._live()) return;  // a "state" handler closed the stream
      if (this._tickets) this._withTicket(function (ticket) { this._open(this.subscribeUrl(ticket)); });
      else this._open(this.subscribeUrl());
    },

    _open: function (url) {
      var self = this;
      var source = new root.EventSource(url, {withCredentials: !!this.options.withCredentials});
      var opened = false;
      this._source = source;
      source.onopen = function () {
        if (source !== self._source) return;
        opened = true;
        self._attempt = 0;
        self._setState("open");
      };
      source.onerror = function () {
        if (source !== self._source || !self._live()) return;
        // CLOSED: a non-200 answer, or a 200 that is not an event stream; the browser gave up for good.
        if (source.readyState === root.EventSource.CLOSED) self._reconnect("failed");
        else self._reconnect(self.state === "busy" ? "busy" : (opened ? "ended" : "lost"));
      };
      for (var i = 0; i < this._wanted.length; i++) this._listenOn(source, this._wanted[i]);
    },

    _listenOn: function (source, name) {
      var self = this;
      source.addEventListener(name, function (message) {
        if (source === self._source && self._live()) self._receive(name, message);
      });
    },

    /** The one way back after a connection is gone; ``reason`` is a key of RECONNECT. */
    _reconnect: function (reason, detail) {
      var rule = RECONNECT[reason];
      // After a busy, keep what the server said (its reason and delay) for the state notification.
      var d = reason === "busy" ? this._detail : {};
      for (var key in detail || {}) d[key] = detail[key];
      this.retries += 1;
      if (this._source && !this._tickets && rule.then === "connect") {
        // The EventSource reconnects by itself, after the server's `retry:`, sending Last-Event-ID.
        this._setState(reason === "busy" ? "busy" : "connecting", d);
        return;
      }
      // Close at once: with a ticket source the browser's own reconnect would send the spent ticket again,
      // get a 401 and give up for good; this script builds the next stream with a fresh one.
      if (this._source) { this._source.close(); this._source = null; }
      d.delay = rule.wait === "hint" && d.delay > 0 ? d.delay : this._backoff();
      var self = this;
      var next = rule.then === "probe" ? this._probe : this._connect;
      clearTimeout(this._timer);
      this._timer = setTimeout(function () { self._timer = null; next.call(self); }, d.delay);
      this._setState(rule.state, d);  // after the timer: a handler that closes the stream stops it too
    },

    _backoff: function () {
      var o = this.options;
      this._attempt += 1;
      var delay = Math.min(o.maxDelay, o.minDelay * Math.pow(2, this._attempt - 1));
      // Jitter, so a thousand pages behind one proxy do not come back in the same millisecond.
      return Math.round(delay * (0.5 + Math.random()));
    },

    // Ask the ticket source for a ticket, then ``then(ticket)``; a final refusal stops, anything else
    // (5xx, network error, no answer in time, no ticket in the answer) backs off and asks again.
    _withTicket: function (then) {
      var self = this;
      var turn = ++this._turn;
      var settle = function (handle) {
        return function (value) {
          if (turn !== self._turn || !self._live()) return;
          self._turn += 1;  // settled: a late answer (after a timeout) is ignored
          clearTimeout(self._ticketTimer);
          self._ticketTimer = null;
          handle(value);
        };
      };
      var failed = settle(function (error) {
        var status = error && typeof error.status === "number" ? error.status : 0;
        var detail = {status: status || undefined,
                      reason: "no ticket: " + ((error && error.message) || "the ticket source failed")};
        if (status && !TRANSIENT[status]) self._setState("refused", detail);
        else self._reconnect("ticket-failed", detail);
      });
      this._ticketTimer = setTimeout(function () {
        failed(httpError(0, "no answer within " + self.options.ticketTimeout + " ms"));
      }, this.options.ticketTimeout);
      new Promise(function (resolve) { resolve(self._tickets.call(self)); })
        .then(ticketOf)
        .then(settle(function (ticket) { then.call(self, ticket); }), failed);
    },

    _probe: function () {
      if (!this._live()) return;
      if (typeof root.fetch !== "function") { this._connect(); return; }
      // With tickets, the probe spends a fresh ticket of its own: a ticket is never sent twice.
      if (this._tickets) this._withTicket(function (ticket) { this._head(this.subscribeUrl(ticket)); });
      else this._head(this.subscribeUrl());
    },

    _head: function (url) {
      var self = this;
      // HEAD runs the same checks as a subscribe without opening a stream, and unlike an EventSource
      // it tells the status: a proxy's 502 (try later) from a 401 (never).
      root.fetch(url, {
        method: "HEAD", cache: "no-store",
        credentials: this.options.withCredentials ? "include" : "same-origin"
      }).then(function (reply) { return reply.status; }, function () { return 0; }).then(function (status) {
        if (!self._live()) return;
        var http = status ? " (HTTP " + status + ")" : " (no answer)";
        if (status === 204) self._setState("closed", {status: status, reason: "closed by the server"});
        else if (status >= 200 && status < 300) self._connect();
        else if (TRANSIENT[status]) {
          self._reconnect("unavailable", {status: status || undefined,
                                          reason: "the server cannot take the stream yet" + http});
        } else self._setState("refused", {status: status, reason: "the server refused the stream" + http});
      });
    },

    // -- events -------------------------------------------------------------------------------------

    _receive: function (name, message, relayed) {
      var id = message.lastEventId || "";
      // A holder may still get the last frames of the one before it: their events, not what they did.
      if (relayed && this.role === "holder" && CONTROL[name]) return;
      if (id && !CONTROL[name]) {
        // An event (not close, reset or busy, whose ids are resume points, not events): once per tab.
        if (this._seen[id]) return;
        this._seen[id] = 1;
        if (this._seenOrder.push(id) > SEEN_IDS) delete this._seen[this._seenOrder.shift()];
      }
      if (this.role === "holder" && !relayed) {
        this._post({type: "event", name: name, data: message.data, id: id});
      }
      // What the event does to the state, every tab works out for itself, as the holder does.
      this._relaying = false;
      try { this._handle(name, id, message); } finally { this._relaying = true; }
    },

    _handle: function (name, id, message) {
      var event = {id: id, name: name, data: message.data, time: new Date(), message: message};
      if (name === "close") {
        // Resume later from just after the close, never from the close itself (that would be 204),
        // nor from before it (the replay would hand back this close and end the stream again).
        this._remember(stripCloseMark(id));
        var info = parseJSON(message.data) || {};
        this._setState("closed", {reason: info.reason || "closed by the server"});
      } else if (name === "busy") {
        // The stream ends next; _reconnect("busy") waits out the delay the server asked for.
        var busy = parseJSON(message.data) || {};
        event.reason = busy.reason;
        event.retry = busy.retry;
        this._setState("busy", {reason: busy.reason, delay: busy.retry});
      } else {
        this._remember(id);
        if (name === "reset") {
          var reset = parseJSON(message.data) || {};
          event.reason = reset.reason;
          event.lastEventId = reset.lastEventId;
        }
      }
      if (this._names.indexOf(name) < 0) return;  // another tab's name: not this page's business
      this._emit(name, event);
      this._emit("*", event);
    },

    _remember: function (id) {
      if (!id) return;
      this.lastEventId = id;
      if (this._store) {
        try { this._store.setItem(this._storeKey, id); } catch (e) { /* full or disabled: keep in memory */ }
      }
    },

    _load: function () {
      try { return this._store ? this._store.getItem(this._storeKey) : null; } catch (e) { return null; }
    },

    // -- sharing between tabs (the top of this file) ------------------------------------------------

    _join: function () {
      if (!this._live()) return;
      var self = this;
      this._setState("connecting");
      this._channel = new root.BroadcastChannel(this.key);
      this._channel.onmessage = function (message) { if (self._live()) self._onMessage(message.data || {}); };
      this._post({type: "hello", names: this._names});
      this._abort = new root.AbortController();
      root.navigator.locks.request(this.key, {signal: this._abort.signal}, function () {
        if (!self._live()) return null;
        // Held until the promise settles: stream.close(), a final state, or the page going away.
        return new Promise(function (resolve) {
          self._release = resolve;
          self._abort = null;
          self._takeOver();
        });
      }).catch(function () { /* AbortError: this tab left the queue */ });
    },

    _takeOver: function () {
      this.role = "holder";
      // A first holder has said "connecting" already; a follower that takes over says it again (the
      // stream it saw is gone), and every tab hears it.
      if (this.state === "connecting") this._post(this._stateMessage());
      this._connect(this.state === "connecting");
    },

    _onMessage: function (m) {
      if (m.type === "event") {
        this._receive(m.name, {data: m.data, lastEventId: m.id}, true);
      } else if (m.type === "state") {
        if (this.role !== "follower" || (m.to && m.to !== this._tab)) return;
        this.retries = m.retries;
        if (m.to && m.state === this.state) return;  // the answer to a hello: the news only
        this._setState(m.state, m.detail);
      } else if (m.type === "hello" || m.type === "names") {
        this._want(m.names || []);
        if (m.type === "hello" && this.role === "holder") {
          var answer = this._stateMessage();
          answer.to = m.from;
          this._post(answer);
        }
      }
    },

    /** Listen to ``names`` too: this tab's own, or another tab's, so that any holder carries them. */
    _want: function (names) {
      for (var i = 0; i < names.length; i++) {
        if (typeof names[i] !== "string" || this._wanted.indexOf(names[i]) >= 0) continue;
        this._wanted.push(names[i]);
        if (this._source) this._listenOn(this._source, names[i]);
      }
    },

    _stateMessage: function () {
      var d = this._detail || {};
      return {type: "state", state: this.state, retries: this.retries,
              detail: {delay: d.delay, status: d.status, reason: d.reason}};
    },

    _post: function (message) {
      if (!this._channel) return;
      message.from = this._tab;
      try { this._channel.postMessage(message); } catch (e) { /* the channel is closed */ }
    },

    // Out of the sharing for good: leave the lock's queue, or free the lock (after CLOSE_LINGER_MS when
    // the server ended the stream, so the followers hear it before any could take over).
    _leave: function (linger) {
      if (this._abort) { this._abort.abort(); this._abort = null; }
      var release = this._release;
      var channel = this._channel;
      this._release = null;
      this._channel = null;
      var done = function () {
        if (release) release();
        if (channel) channel.close();
      };
      if (linger && release) setTimeout(done, CLOSE_LINGER_MS); else done();
    },

    // -- state --------------------------------------------------------------------------------------

    /** The one place the state changes (the table at the top), and the one that tells "state" handlers. */
    _setState: function (state, detail) {
      if (!this._live()) return;  // closed and refused are for good
      this.state = state;
      this._detail = detail || {};
      if (this.role === "holder" && this._relaying && !this._byPage) this._post(this._stateMessage());
      if (FINAL[state]) {
        if (this._timer) { clearTimeout(this._timer); this._timer = null; }
        if (this._ticketTimer) { clearTimeout(this._ticketTimer); this._ticketTimer = null; }
        if (this._source) { this._source.close(); this._source = null; }
        this._leave(!this._byPage);
      }
      var d = this._detail;
      this._emit("state", {state: state, retries: this.retries, delay: d.delay, status: d.status,
                           reason: d.reason, lastEventId: this.lastEventId, role: this.role});
    },

    _live: function () {
      return !FINAL[this.state];
    },

    _emit: function (name, arg) {
      var list = this._handlers[name] || [];
      for (var i = 0; i < list.length; i++) {
        try {
          list[i].call(this, arg);
        } catch (error) {
          // One faulty handler must not stop the others, nor the stream.
          setTimeout(function () { throw error; }, 0);
        }
      }
    }
  };

  root.PushSvc = {
    /** Open a stream: see DEFAULTS above for the options. */
    subscribe: function (options) { return new Stream(options); },
    Stream: Stream,
    stripCloseMark: stripCloseMark,
    version: "0.1.0"
  };
})(typeof window !== "undefined" ? window : this);
