// The calendar page: Event Calendar's resource timeline (one track per GPU, grouped by node), the
// feed for the visible window, drag-to-select into the booking form, filters, and hover/focus
// details. Booking itself is the form's (htmx posts it; the server answers in place).
(function () {
  "use strict";

  function readJSON(id) { return JSON.parse(document.getElementById(id).textContent); }

  document.addEventListener("DOMContentLoaded", function () {
    var el = document.getElementById("calendar");
    if (!el || !window.EventCalendar) return;
    var config = readJSON("calendar-config");
    var resources = readJSON("calendar-resources");
    var zone = document.getElementById("zone-name").dataset.zone || "UTC";
    var utc = zone === "UTC";
    var slotMs = config.slotMinutes * 60000;
    var offset = utc ? 0 : -new Date().getTimezoneOffset();
    var gridShift = ((offset % config.slotMinutes) + config.slotMinutes) % config.slotMinutes;
    var healthy = {}, gpuName = {};
    resources.forEach(function (node) {
      node.children.forEach(function (gpu) {
        healthy[gpu.id] = gpu.extendedProps.healthy;
        gpuName[gpu.id] = gpu.extendedProps.name;
      });
    });
    var filters = document.getElementById("filters");
    var form = document.getElementById("booking-form");
    var tip = document.getElementById("event-tip");

    // Event Calendar hands back wall times of its zone ("2030-01-07T10:00:00"): the instant they name.
    function instant(str) {
      if (/(Z|[+-]\d\d:\d\d)$/.test(str)) return new Date(str);
      return new Date(utc ? str + "Z" : str);
    }
    // Cells of healthy GPUs from the current slot on (the current slot books "now"); the past
    // cannot be selected.
    function selectable(info) {
      return info.resource && healthy[info.resource.id] === true &&
        floorToSlot(instant(info.startStr)) >= floorToSlot(new Date());
    }
    function bookingUrl(event) { return config.bookingUrl + event.id + "/"; }
    function describe(event) {
      var p = event.extendedProps;
      var lines = [
        p.title + " (#" + event.id + ")",
        "Owner: " + p.owner + " · team " + (config.teams[p.team] || p.team),
        "Priority: " + p.priority + (p.preemptible ? ", preemptible" : ""),
        "Status: " + p.status,
      ];
      if (p.borrowed) lines.push("Borrowed: " + config.borrowedTerms);
      if (p.series) lines.push("↻ Repeats " + p.series.rule + " (series #" + p.series.id + ")");
      if (p.job) lines.push("Job: " + p.job.status + ", epoch " + p.job.epoch + " of " + p.job.epochs);
      return lines;
    }
    function showTip(event, target) {
      tip.textContent = "";
      describe(event).forEach(function (line) {
        var div = document.createElement("div");
        div.textContent = line;
        tip.appendChild(div);
      });
      var box = target.getBoundingClientRect();
      tip.style.left = Math.max(8, box.left + window.scrollX) + "px";
      tip.style.top = (box.bottom + window.scrollY + 4) + "px";
      tip.hidden = false;
    }
    function hideTip() { tip.hidden = true; }

    // Slots start on boundaries counted from midnight UTC (reservations.policy).
    function floorToSlot(date) { return new Date(Math.floor(date.getTime() / slotMs) * slotMs); }
    function pad(n) { return (n < 10 ? "0" : "") + n; }
    // A moment as wall time in the calendar's zone, "YYYY-MM-DDTHH:MM" (what the form takes).
    function wall(date) {
      if (utc) return date.toISOString().slice(0, 16);
      return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
        "T" + pad(date.getHours()) + ":" + pad(date.getMinutes());
    }

    function fillForm(gpuId, startStr, slots) {
      var start = floorToSlot(instant(startStr));
      startStr = wall(start);
      form.elements.start_now.checked = start < new Date();
      var select = form.elements.gpus;
      Array.prototype.forEach.call(select.options, function (option) {
        option.selected = option.value === String(gpuId);
      });
      // The form takes the viewer's wall time, the same zone the calendar shows.
      form.elements.date.value = startStr.slice(0, 10);
      form.elements.slot.value = startStr.slice(11, 16);
      form.elements.slots.value = slots;
      suggestSizes();
      form.elements.title.focus();
      document.getElementById("booking-result").textContent = "";
      // Set from here, the fields fire no "change": the quota preview (htmx) listens for this instead.
      form.dispatchEvent(new Event("selection"));
    }

    // --- Views and widths ---
    // The whole day or the whole week fits the calendar's box: the slot columns are as wide as the
    // width beside the GPU names allows, down to a floor below which the timeline scrolls inside its
    // box (never the page). A narrow screen starts on a day; crossing the breakpoint switches view.
    var DAY = "resourceTimelineDay", WEEK = "resourceTimelineWeek";
    var narrow = window.matchMedia("(max-width: 700px)");
    var slotsPerDay = 24 * 60 / config.slotMinutes;
    var MIN_SLOT_WIDTH = {};
    MIN_SLOT_WIDTH[DAY] = 48;  // "10:00" fits
    MIN_SLOT_WIDTH[WEEK] = 6;

    function slotWidth(view) {
      var days = view === WEEK ? 7 : 1;
      var box = el.querySelector(".ec-main") || el;
      var names = el.querySelector(".ec-body .ec-sidebar");
      // Before the first drawing the GPU names' width is a guess; fit() measures it afterwards.
      var free = box.clientWidth - (names ? names.offsetWidth : (narrow.matches ? 120 : 240)) - days;
      return Math.max(MIN_SLOT_WIDTH[view], Math.floor(free / (days * slotsPerDay) * 10) / 10);
    }
    function viewButtons(view) {
      return {
        dayView: { text: "Day", active: view === DAY, click: function () { showView(DAY); } },
        weekView: { text: "Week", active: view === WEEK, click: function () { showView(WEEK); } },
      };
    }
    // The slot width first, so that the new view is drawn once, at its own width.
    function showView(view) {
      calendar.setOption("slotWidth", slotWidth(view));
      calendar.setOption("view", view);
      calendar.setOption("customButtons", viewButtons(view));
    }
    function fit() {
      var width = slotWidth(calendar.getView().type);
      if (width !== calendar.getOption("slotWidth")) calendar.setOption("slotWidth", width);
    }

    // A GPU's track: its name, then its model (and health), which a narrow screen puts on a line
    // of its own (calendar.css); a node's is its title.
    function resourceLabel(info) {
      var p = info.resource.extendedProps;
      if (p.gpu === undefined) return info.resource.title;
      var sep = document.createElement("span"), model = document.createElement("span");
      sep.className = "label-sep";
      sep.textContent = " · ";
      model.className = "gpu-model";
      model.textContent = p.model + (p.healthy ? "" : " · unhealthy");
      return { domNodes: [document.createTextNode(p.label), sep, model] };
    }

    // --- Bookings' labels ---
    // A booking shows its title and owner, wrapped onto lines as its box allows; when even a word does
    // not fit (a short booking in the week view), it shows no text rather than a cut one: the colour
    // says whose, and hover, focus and the screen reader's label give the rest.
    function eventContent(info) {
      var p = info.event.extendedProps;
      if (!p.owner) return info.event.title;  // the past and unhealthy shading
      var title = document.createElement("span"), owner = document.createElement("span");
      title.className = "event-title";
      title.textContent = p.title;
      owner.className = "event-owner";
      owner.textContent = p.owner;
      var nodes = [title, document.createTextNode(" · "), owner];
      // An occurrence of a series: marked; the details (hover, focus, the label) say its rule.
      if (p.series) {
        var mark = document.createElement("span");
        mark.className = "series-mark";
        mark.setAttribute("aria-hidden", "true");
        mark.textContent = "↻ ";
        nodes.unshift(mark);
      }
      return { domNodes: nodes };
    }
    var labels = new ResizeObserver(function (entries) {
      entries.forEach(function (entry) {
        var box = entry.target, body = box.querySelector(".ec-event-body");
        if (!box.isConnected || !body) {
          labels.unobserve(box);
          return;
        }
        // An attribute, not a class: Event Calendar rewrites the class when a booking's status changes.
        box.toggleAttribute("data-untitled", body.scrollWidth > body.clientWidth + 1);
      });
    });

    var initialView = narrow.matches ? DAY : WEEK;
    var calendar = EventCalendar.create(el, {
      view: initialView,
      // The week starts today (in the calendar's zone): what can still be booked comes first.
      firstDay: utc ? new Date().getUTCDay() : new Date().getDay(),
      headerToolbar: { start: "prev,next today", center: "title", end: "dayView,weekView" },
      customButtons: viewButtons(initialView),
      buttonText: { today: "Today" },
      slotWidth: slotWidth(initialView),
      resources: resources,
      timeZone: utc ? "UTC" : "local",
      slotDuration: { minutes: config.slotMinutes },
      // Cells on the booking grid: slots are counted from midnight UTC, so in a zone whose offset
      // is not a whole number of slots (Europe/Berlin with two-hour slots) each day's cells start
      // that much after local midnight.
      slotMinTime: { minutes: gridShift },
      slotMaxTime: { minutes: gridShift + 24 * 60 },
      snapDuration: { minutes: config.slotMinutes },
      // A week labels every six hours with the hour alone (its columns are narrow), a day every slot.
      views: {
        resourceTimelineWeek: { slotLabelInterval: { hours: 6 }, slotLabelFormat: { hour: "2-digit", hourCycle: "h23" } },
      },
      slotLabelFormat: { hour: "2-digit", minute: "2-digit", hourCycle: "h23" },
      resourceLabelContent: resourceLabel,
      dayHeaderFormat: { weekday: "short", day: "numeric", month: "short" },
      // The booking's title and owner; the times are on the axis and in the details.
      eventContent: eventContent,
      height: "auto",
      nowIndicator: true,
      selectable: true,
      // Bookings move through the booking's page (the rules decide), never by dragging them here.
      editable: false,
      eventStartEditable: false,
      eventDurationEditable: false,
      selectConstraint: selectable,
      eventSources: [{
        url: config.events,
        extraParams: function () {
          return {
            zone: zone,
            team: filters.elements.team.value,
            node: filters.elements.node.value,
            mine: filters.elements.mine.checked ? "1" : "",
          };
        },
      }],
      select: function (info) {
        if (!selectable(info)) return;
        var slots = Math.max(1, Math.round((instant(info.endStr) - instant(info.startStr)) / slotMs));
        fillForm(info.resource.id, info.startStr, slots);
      },
      // A click on one free cell selects that slot.
      dateClick: function (info) {
        var end = new Date(instant(info.dateStr).getTime() + slotMs);
        if (info.resource && healthy[info.resource.id] === true && end > new Date()) {
          fillForm(info.resource.id, info.dateStr, 1);
        }
      },
      eventClick: function (info) {
        if (info.event.display === "auto") window.location = bookingUrl(info.event);
      },
      eventDidMount: function (info) {
        var event = info.event, node = info.el;
        if (event.display !== "auto") return;
        labels.observe(node);
        var label = describe(event).join(". ");
        node.setAttribute("aria-label", label + ". Press Enter to open it.");
        node.setAttribute("tabindex", "0");
        node.setAttribute("role", "link");
        node.addEventListener("mouseenter", function () { showTip(event, node); });
        node.addEventListener("mouseleave", hideTip);
        node.addEventListener("focus", function () { showTip(event, node); });
        node.addEventListener("blur", hideTip);
        node.addEventListener("keydown", function (e) {
          if (e.key === "Enter") window.location = bookingUrl(event);
        });
      },
    });

    // The toolbar's arrows are icons: give them names for screen readers.
    [[".ec-prev", "Earlier"], [".ec-next", "Later"]].forEach(function (pair) {
      var button = el.querySelector(pair[0]);
      if (button) button.setAttribute("aria-label", pair[1]);
    });
    // Widths follow the box (a resize, the side panel moving below); views follow the breakpoint.
    var fitting = false;
    new ResizeObserver(function () {
      if (fitting) return;
      fitting = true;
      window.requestAnimationFrame(function () { fitting = false; fit(); });
    }).observe(el);
    // Only a real crossing switches (Chromium also fires "change" when the window is merely resized
    // for a moment, as a full-page screenshot does, without the answer changing).
    var wasNarrow = narrow.matches;
    narrow.addEventListener("change", function () {
      if (narrow.matches === wasNarrow) return;
      wasNarrow = narrow.matches;
      showView(narrow.matches ? DAY : WEEK);
    });
    filters.addEventListener("change", function () { calendar.refetchEvents(); });
    // The answer in the side panel: in view, whatever was scrolled.
    document.body.addEventListener("htmx:afterSwap", function (e) {
      if (e.detail.target.id === "booking-result" && e.detail.target.firstElementChild) {
        e.detail.target.scrollIntoView({ block: "nearest" });
      }
    });
    // The server answers a booking with a "booked" trigger (HX-Trigger): show it at once.
    document.body.addEventListener("booked", function () { calendar.refetchEvents(); });
    document.body.addEventListener("click", function (e) {
      var dismiss = e.target.closest("[data-dismiss]");
      if (dismiss) document.getElementById(dismiss.dataset.dismiss).textContent = "";
    });
    // Ticking "train" shows the job's fields; low priority is preemptible unless unticked.
    var train = form.elements.train, jobFields = form.querySelector(".job-fields");
    function showJob() { jobFields.hidden = !train.checked; }
    train.addEventListener("change", showJob);
    showJob();
    // Ticking "serve" shows the models to serve.
    var serve = form.elements.serve, serveFields = form.querySelector(".serve-fields");
    function showServe() { serveFields.hidden = !serve.checked; }
    serve.addEventListener("change", showServe);
    showServe();
    // A job starts from the chosen device's image size and batch (a CPU device's are small, a GPU's
    // ultralytics' defaults: data-imgsz and data-batch on each GPU), unless the person typed their own.
    ["imgsz", "batch"].forEach(function (name) {
      form.elements[name].addEventListener("input", function () { this.setAttribute("data-edited", ""); });
    });
    function suggestSizes() {
      var chosen = form.elements.gpus.selectedOptions[0];
      if (!chosen) return;
      ["imgsz", "batch"].forEach(function (name) {
        var field = form.elements[name];
        if (!field.hasAttribute("data-edited")) field.value = chosen.getAttribute("data-" + name);
      });
    }
    form.elements.gpus.addEventListener("change", suggestSizes);
    form.elements.priority.addEventListener("change", function () {
      form.elements.preemptible.checked = form.elements.priority.value === "low";
    });
    window.gpuCalendar = calendar;
  });
})();
