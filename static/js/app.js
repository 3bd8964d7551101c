// Every page: show times in the viewer's zone (or UTC when asked). The server reads the `tz`
// cookie (web.middleware) and renders times in that zone; the calendar reads it too.
(function () {
  "use strict";
  var COOKIE = "tz", MODE = "tz_mode";

  function readCookie(name) {
    var match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? match[1] : "";
  }
  function writeCookie(name, value) {
    // Zone names ("Europe/Berlin", "America/Argentina/Buenos_Aires") are safe in a cookie as they are.
    document.cookie = name + "=" + value + "; path=/; max-age=31536000; SameSite=Lax";
  }
  function browserZone() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch (e) { return "UTC"; }
  }

  var wanted = readCookie(MODE) === "utc" ? "UTC" : browserZone();
  if (readCookie(COOKIE) !== wanted) {
    writeCookie(COOKIE, wanted);
    // The page was rendered in another zone: once, render it again in the right one.
    if (!sessionStorage.getItem("tz-reloaded")) {
      sessionStorage.setItem("tz-reloaded", "1");
      location.reload();
      return;
    }
  }
  sessionStorage.removeItem("tz-reloaded");

  document.addEventListener("DOMContentLoaded", function () {
    var toggle = document.getElementById("zone-toggle");
    if (!toggle) return;
    toggle.addEventListener("click", function () {
      writeCookie(MODE, readCookie(MODE) === "utc" ? "local" : "utc");
      writeCookie(COOKIE, readCookie(MODE) === "utc" ? "UTC" : browserZone());
      location.reload();
    });
  });
})();
