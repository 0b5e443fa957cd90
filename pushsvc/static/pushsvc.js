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
 */
(function (root) {
  "use strict";

  var CLOSE_MARK = ".close";
  // Handled here, listened to on every EventSource.
  var BUILTIN = ["message", "close", "reset", "busy"];
  // Statuses a proxy or a restarting server gives for a moment; anything else 4xx is final.
  var TRANSIENT = {0: 1, 408: 1, 425: 1, 429: 1, 500: 1, 502: 1, 503: 1, 504: 1};
  var DEFAULTS = {
    url: "/sse",            // where pushsvc is mounted (PUSHSVC_URL_PREFIX), absolute or relative
    clientId: null,
    groups: [],
    token: null,            // a subscriber JWT, sent as ?token= (EventSource cannot set headers)
    events: [],             // named events to listen to besides message/close/reset/busy
    lastEventId: null,      // resume from this id instead of the stored one
    storage: true,          // keep the last event id in localStorage (false: do not)
    withCredentials: false, // send cookies cross-origin (a pushsvc_token cookie)
    minDelay: 1000,         // backoff after a failed connection: first delay, in ms...
    maxDelay: 30000         // ...doubling up to this
  };

  function stripCloseMark(id) {
    return id && id.slice(-CLOSE_MARK.length) === CLOSE_MARK ? id.slice(0, -CLOSE_MARK.length) : id;
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

  function Stream(options) {
    var o = {};
    var key;
    for (key in DEFAULTS) o[key] = DEFAULTS[key];
    for (key in options || {}) o[key] = options[key];
    if (!o.clientId) throw new Error("pushsvc: clientId is required");
    o.url = String(o.url).replace(/\/+$/, "");
    o.groups = [].concat(o.groups || []).filter(Boolean);
    this.options = o;
    this.state = "connecting";
    this.retries = 0;         // reconnects since subscribe, by the browser or by this script
    this._attempt = 0;        // failed connections in a row, for the backoff
    this._handlers = {};
    this._names = BUILTIN.concat(o.events || []);
    this._source = null;
    this._timer = null;
    this._stopped = false;
    this._store = o.storage === false ? null : (o.storage === true ? localStore() : o.storage);
    this._storeKey = "pushsvc:lastEventId:" + o.url + ":" + o.clientId;
    this.lastEventId = stripCloseMark(o.lastEventId || this._load() || "");
    // Connect on the next turn, so handlers attached right after subscribe() see every state and event.
    var self = this;
    this._timer = setTimeout(function () { self._timer = null; self._connect(); }, 0);
  }

  Stream.prototype = {
    /** Call ``handler(event)`` for events named ``name`` ("message" for unnamed ones), or "*" for all;
     *  "state" handlers get ``{state, retries, delay, status, reason}``. Returns the stream. */
    on: function (name, handler) {
      (this._handlers[name] = this._handlers[name] || []).push(handler);
      if (name !== "*" && name !== "state") this.listen(name);
      return this;
    },

    /** Also receive events named ``name`` (EventSource only reports names it is told about). */
    listen: function (name) {
      if (this._names.indexOf(name) < 0) {
        this._names.push(name);
        if (this._source) this._listenOn(this._source, name);
      }
      return this;
    },

    /** Stop for good: the stream ends and nothing reconnects. */
    close: function () {
      this._stop("closed", {reason: "closed by the page"});
    },

    subscribeUrl: function () {
      var o = this.options;
      var query = o.groups.map(function (g) { return "group=" + encodeURIComponent(g); });
      // A fresh EventSource cannot send Last-Event-ID; the server takes ?lastEventId= instead. The
      // browser's own reconnects send the header, which the server prefers, so this never goes stale.
      if (this.lastEventId) query.push("lastEventId=" + encodeURIComponent(this.lastEventId));
      if (o.token) query.push("token=" + encodeURIComponent(o.token));
      return o.url + "/subscribe/" + encodeURIComponent(o.clientId) + (query.length ? "?" + query.join("&") : "");
    },

    // -- connection ---------------------------------------------------------------------------------

    _connect: function () {
      if (this._stopped) return;
      var self = this;
      var source = new root.EventSource(this.subscribeUrl(), {withCredentials: !!this.options.withCredentials});
      this._source = source;
      this._setState("connecting");
      source.onopen = function () {
        if (source !== self._source) return;
        self._attempt = 0;
        self._setState("open");
      };
      source.onerror = function () {
        if (source !== self._source || self._stopped) return;
        if (source.readyState === root.EventSource.CLOSED) {
          // A non-200 answer, or a 200 that is not an event stream: the browser gave up for good.
          self._source = null;
          self._recover();
        } else {
          // The stream ended and the browser reconnects by itself after the server's retry: delay.
          self.retries += 1;
          if (self.state !== "busy") self._setState("connecting");
          else self._emitState();
        }
      };
      for (var i = 0; i < this._names.length; i++) this._listenOn(source, this._names[i]);
    },

    _listenOn: function (source, name) {
      var self = this;
      source.addEventListener(name, function (message) {
        if (source === self._source && !self._stopped) self._receive(name, message);
      });
    },

    _recover: function () {
      var o = this.options;
      var self = this;
      this._attempt += 1;
      this.retries += 1;
      var delay = Math.min(o.maxDelay, o.minDelay * Math.pow(2, this._attempt - 1));
      // Jitter, so a thousand pages behind one proxy do not come back in the same millisecond.
      delay = Math.round(delay * (0.5 + Math.random()));
      this._setState("retrying", {delay: delay});
      this._timer = setTimeout(function () { self._timer = null; self._probe(); }, delay);
    },

    _probe: function () {
      var self = this;
      if (this._stopped) return;
      if (typeof root.fetch !== "function") { this._connect(); return; }
      // HEAD runs the same checks as a subscribe without opening a stream, and unlike an EventSource
      // it tells the status: a proxy's 502 (try later) from a 401 (never).
      root.fetch(this.subscribeUrl(), {
        method: "HEAD", cache: "no-store",
        credentials: this.options.withCredentials ? "include" : "same-origin"
      }).then(function (reply) { return reply.status; }, function () { return 0; }).then(function (status) {
        if (self._stopped) return;
        if (status === 204) self._stop("closed", {status: status, reason: "closed by the server"});
        else if (status >= 200 && status < 300) self._connect();
        else if (TRANSIENT[status]) self._recover();
        else self._stop("refused", {status: status, reason: "the server refused the stream (HTTP " + status + ")"});
      });
    },

    _stop: function (state, detail) {
      this._stopped = true;
      if (this._timer) { clearTimeout(this._timer); this._timer = null; }
      if (this._source) { this._source.close(); this._source = null; }
      this._setState(state, detail);
    },

    // -- events -------------------------------------------------------------------------------------

    _receive: function (name, message) {
      var id = message.lastEventId || "";
      var event = {id: id, name: name, data: message.data, time: new Date(), message: message};
      if (name === "close") {
        // Resume later from just after the close, never from the close itself (that would be 204),
        // nor from before it (the replay would hand back this close and end the stream again).
        this._remember(stripCloseMark(id));
        var info = parseJSON(message.data) || {};
        this._stop("closed", {reason: info.reason || "closed by the server"});
      } else if (name === "busy") {
        // The stream ends now and the browser comes back after the retry the server sent with it.
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

    _setState: function (state, detail) {
      this.state = state;
      this._detail = detail || {};
      this._emitState();
    },

    _emitState: function () {
      var d = this._detail || {};
      this._emit("state", {state: this.state, retries: this.retries, delay: d.delay, status: d.status,
                           reason: d.reason, lastEventId: this.lastEventId});
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
