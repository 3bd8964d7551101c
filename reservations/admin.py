"""Admin: inventory and teams edited directly; reservations only through the booking services (so
every admin edit is checked and audited like an API call); the audit log read-only for everyone."""

import csv
import json
from datetime import date, datetime, time, timedelta, timezone as dt_timezone

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters, csrf_protect_m
from django.contrib.admin.widgets import ForeignKeyRawIdWidget
from django.core.paginator import Paginator
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection, models
from django.core.exceptions import PermissionDenied
from django.forms.models import BaseInlineFormSet, model_to_dict
from django.http import HttpResponseRedirect, StreamingHttpResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.text import Truncator

from . import recurrence, services
from .errors import BookingConflict, BookingError, QuotaExceeded
from .models import GPU, AuditEntry, Membership, Node, Notice, Reservation, Series, Team, TeamQuota


def _audit_admin_change(request, obj, *, action, before, after):
    services.audit_record(
        action=action,
        actor=request.user,
        target=f"{obj._meta.model_name}:{obj.pk}",
        reason=f"Admin {action} of {obj._meta.verbose_name} {obj}.",
        before=before,
        after=after,
    )


class AuditedAdmin(admin.ModelAdmin):
    """Inventory and team edits in the admin (inlines too) land in the audit log, inside the
    transaction the admin wraps each save in."""

    def save_model(self, request, obj, form, change):
        before = model_to_dict(type(obj).objects.get(pk=obj.pk)) if change else None
        super().save_model(request, obj, form, change)
        after = model_to_dict(obj)
        if after != before:
            _audit_admin_change(request, obj, action="update" if change else "create", before=before, after=after)

    def delete_model(self, request, obj):
        _audit_admin_change(request, obj, action="delete", before=model_to_dict(obj), after=None)
        super().delete_model(request, obj)

    def save_formset(self, request, form, formset, change):
        befores = {
            f.instance.pk: model_to_dict(type(f.instance).objects.get(pk=f.instance.pk))
            for f in formset.initial_forms
            if f.instance.pk and f.has_changed()
        }
        super().save_formset(request, form, formset, change)
        for obj in formset.new_objects:
            _audit_admin_change(request, obj, action="create", before=None, after=model_to_dict(obj))
        for obj, _ in formset.changed_objects:
            _audit_admin_change(request, obj, action="update", before=befores.get(obj.pk), after=model_to_dict(obj))
        for obj in formset.deleted_objects:
            _audit_admin_change(request, obj, action="delete", before=model_to_dict(obj), after=None)


class RowRawIdWidget(ForeignKeyRawIdWidget):
    """The admin's raw id widget, labelled from the object its row already holds (`row_object`, read
    with the rows) rather than by a query of its own: a team's page of 200 members asked 200."""

    row_object = None

    def label_and_url_for_value(self, value):
        obj = self.row_object
        if obj is None or str(obj.pk) != str(value):
            return super().label_and_url_for_value(value)
        try:
            url = reverse(f"{self.admin_site.name}:{obj._meta.app_label}_{obj._meta.model_name}_change", args=(obj.pk,))
        except NoReverseMatch:
            url = ""  # no admin page for it
        return Truncator(obj).words(14), url


class MembershipFormSet(BaseInlineFormSet):
    def add_fields(self, form, index):
        super().add_fields(form, index)
        if form.instance.user_id is not None:
            form.fields["user"].widget.row_object = form.instance.user


class MembershipInline(admin.TabularInline):
    model = Membership
    formset = MembershipFormSet
    raw_id_fields = ["user"]
    extra = 0

    def get_queryset(self, request):
        # Each row names its member and team (Membership.__str__, the user's widget): read with the
        # rows, not per row.
        return super().get_queryset(request).select_related("user", "team")

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user":
            kwargs["widget"] = RowRawIdWidget(db_field.remote_field, self.admin_site, using=kwargs.get("using"))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


def _quota_text(quota):
    if quota is None:
        return "unlimited"
    limits = [
        f"{quota.gpu_hours_per_week} GPU-h/week" if quota.gpu_hours_per_week is not None else "GPU-hours unlimited",
        f"at most {quota.max_gpus} GPUs at once" if quota.max_gpus is not None else None,
        f"borrows up to {quota.borrow_gpu_hours_per_week} GPU-h/week"
        if quota.borrow_gpu_hours_per_week is not None else None,
        f"weight {quota.weight}",
    ]
    return ", ".join(limit for limit in limits if limit)


@admin.register(Team)
class TeamAdmin(AuditedAdmin):
    list_display = ["name", "slug", "colour", "webhook_url", "quota_summary"]
    list_select_related = ["quota"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}  # Django 6's default
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["quota_link"]
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]

    @admin.display(description="quota")
    def quota_summary(self, obj):
        return _quota_text(getattr(obj, "quota", None))

    @admin.display(description="quota")
    def quota_link(self, obj):
        # The quota has a page of its own (TeamQuotaAdmin): its changes go through the quota
        # service, in a transaction of their own, which a team form's inline could not give them.
        if obj.pk is None:
            return "Save the team first, then set its quota."
        quota = getattr(obj, "quota", None)
        if quota is None:
            url = reverse("admin:reservations_teamquota_add") + f"?team={obj.pk}"
            return format_html('unlimited (<a href="{}">set a quota</a>)', url)
        url = reverse("admin:reservations_teamquota_change", args=[obj.pk])
        return format_html('{} (<a href="{}">change</a>)', _quota_text(quota), url)


class TeamQuotaForm(forms.ModelForm):
    reason = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Kept in the audit log."
    )

    class Meta:
        model = TeamQuota
        fields = ["team", *services.QUOTA_FIELDS]


@admin.register(TeamQuota)
class TeamQuotaAdmin(admin.ModelAdmin):
    """A team's quota, set and removed through the quota service (services.team_quota_set,
    team_quota_remove): it locks the quota row as a booking does and writes the `quota_change` audit
    entry with the admin as actor, so the admin writes no generic entry of its own (not an
    AuditedAdmin)."""

    form = TeamQuotaForm
    fields = ["team", *services.QUOTA_FIELDS, "reason"]
    list_display = ["team", "gpu_hours_per_week", "max_gpus", "borrow_gpu_hours_per_week", "weight"]
    list_select_related = ["team"]
    search_fields = ["team__name", "team__slug"]
    ordering = ["team__name"]

    @csrf_protect_m
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # Not inside the admin's request-wide transaction: the service locks the quota row in its
        # own (reservations/services/locks.py), and refuses to run inside another.
        return self._changeform_view(request, object_id, form_url, extra_context)

    @csrf_protect_m
    def delete_view(self, request, object_id, extra_context=None):
        return self._delete_view(request, object_id, extra_context)

    def get_readonly_fields(self, request, obj=None):
        # The team is the quota's key: another team's quota is another row.
        return ["team"] if obj is not None else []

    def save_model(self, request, obj, form, change):
        limits = {field: form.cleaned_data[field] for field in services.QUOTA_FIELDS}
        saved = services.team_quota_set(
            team=obj.team, actor=request.user, reason=form.cleaned_data["reason"], **limits
        )
        obj.pk = saved.pk
        obj._state.adding = False

    def delete_model(self, request, obj):
        services.team_quota_remove(team=obj.team, actor=request.user, reason="Quota removed in the admin.")

    def delete_queryset(self, request, queryset):
        for quota in queryset.select_related("team"):
            self.delete_model(request, quota)


class GPUInline(admin.TabularInline):
    model = GPU
    extra = 0

    def get_queryset(self, request):
        # Each row's name is its node's host name and its index (GPU.__str__).
        return super().get_queryset(request).select_related("node")


@admin.register(Node)
class NodeAdmin(AuditedAdmin):
    list_display = ["hostname", "online", "last_heartbeat"]
    list_filter = ["online"]
    search_fields = ["hostname"]
    readonly_fields = ["last_heartbeat"]
    inlines = [GPUInline]


@admin.register(GPU)
class GPUAdmin(AuditedAdmin):
    list_display = ["__str__", "model", "memory_mb", "healthy"]
    list_filter = ["healthy", "model", "node"]
    list_select_related = ["node"]
    raw_id_fields = ["node"]
    search_fields = ["node__hostname", "model", "uuid"]
    actions = ["return_to_service"]

    @admin.action(description="Return to service (clear health failure)")
    def return_to_service(self, request, queryset):
        # An ECC/XID failure never clears itself from clean readings (the GPU needs a reset): this
        # is how an admin who reset it puts it back.
        returned = [gpu for gpu in queryset if services.gpu_return_to_service(gpu_id=gpu.pk, actor=request.user)]
        self.message_user(request, f"{len(returned)} GPU(s) returned to service.", messages.SUCCESS)


class ServiceForm(forms.ModelForm):
    """A reservation form whose clean() performs the change through the booking services, so the
    admin is checked and audited exactly like the API, and a refused rule is a form error by field.
    The service's transaction is the only one (ReservationAdmin.changeform_view): one call makes
    the whole change or none of it."""

    actor = None  # set per request by ReservationAdmin.get_form

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            self.saved = self.perform(cleaned)
        except BookingError as exc:
            self.add_error(exc.field if exc.field in self.fields else None, exc.message)
        except BookingConflict as exc:
            taken = sorted({c.reservation_id for c in exc.conflicts})
            self.add_error(None, f"{exc.message} Conflicting reservations: {taken}.")
        except QuotaExceeded as exc:
            self.add_error(None, exc.message)
        except PermissionDenied as exc:
            self.add_error(None, str(exc))
        return cleaned


class ReservationAddForm(ServiceForm):
    gpus = forms.ModelMultipleChoiceField(queryset=GPU.objects.select_related("node"), required=False)
    gpu_count = forms.IntegerField(min_value=1, required=False, help_text="Or pick GPUs above.")
    slots = forms.IntegerField(min_value=1, initial=1)
    waitlist = forms.BooleanField(required=False, help_text="Join the waitlist if the GPUs are taken.")

    class Meta:
        model = Reservation
        fields = ["user", "team", "title", "start", "priority", "preemptible", "auto_rebook"]

    def perform(self, data):
        picked = [g.pk for g in data.get("gpus") or []]
        return services.reservation_create(
            user=data["user"],
            actor=self.actor,
            team=data["team"].slug,
            title=data.get("title", ""),
            start=data["start"],
            slots=data["slots"],
            gpu_ids=picked or None,
            gpu_count=None if picked else data.get("gpu_count"),
            priority=data["priority"],
            preemptible=data["preemptible"],
            waitlist=data.get("waitlist", False),
            auto_rebook=data["auto_rebook"],
        )


class ReservationChangeForm(ServiceForm):
    slots = forms.IntegerField(min_value=1)
    reason = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Kept in the audit log."
    )

    class Meta:
        model = Reservation
        fields = ["title", "start", "priority", "preemptible"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial.setdefault("slots", self.instance.slots)

    def perform(self, data):
        moved = bool({"start", "slots"} & set(self.changed_data))
        return services.reservation_edit(
            reservation_id=self.instance.pk, actor=self.actor, reason=data.get("reason", ""),
            title=data["title"], priority=data["priority"], preemptible=data["preemptible"],
            start=data["start"] if moved else None, slots=data["slots"] if moved else None,
        )


class EstimatedCountPaginator(Paginator):
    """Pages of a table that grows for years (the audit log, bookings, notices): past ESTIMATE_ABOVE rows the count is
    PostgreSQL's estimate for the list's query (its plan's rows, what EXPLAIN says without running
    it), so that showing a page never counts millions of entries; exact below that, and on SQLite."""

    ESTIMATE_ABOVE = 10_000

    @cached_property
    def count(self):
        queryset = self.object_list
        if connection.vendor == "postgresql":
            sql, params = queryset.query.sql_with_params()
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
                plan = cursor.fetchone()[0]
            estimate = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]["Plan Rows"]
            if estimate > self.ESTIMATE_ABOVE:
                return int(estimate)
        return Paginator.count.func(self)


@admin.register(Reservation)
class ReservationAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "user", "team", "start", "end", "priority", "preemptible", "status"]
    list_filter = ["status", "team", "priority", ("start", admin.DateFieldListFilter)]
    list_select_related = ["user", "team"]
    raw_id_fields = ["user"]
    search_fields = ["title", "user__username", "team__slug"]
    # No date_hierarchy (its links come from a DISTINCT over every booking's dates) and no full
    # count: years of bookings; the date filter picks a day, week, month or year. Latest first, and
    # sorted only by what an index keeps in order: sorting years of bookings by title or owner would
    # read them all for one page.
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    show_facets = admin.ShowFacets.NEVER  # "Show counts" would count every row for each filter choice
    ordering = ["-start", "-id"]
    sortable_by = ["id", "start"]
    actions = ["cancel_selected"]

    @csrf_protect_m
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # Not inside the admin's usual request-wide transaction: the booking services lock rows in
        # one order and must own their transaction (reservations/services/locks.py). The form's
        # clean() makes the whole change in one service call; what the admin writes after it (its
        # history entry) needs no lock.
        return self._changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = ReservationChangeForm if obj is not None else ReservationAddForm
        form_class = super().get_form(request, obj, change=change, **kwargs)
        form_class.actor = request.user
        return form_class

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["user", "team", "title", "gpus", "gpu_count", "start", "slots", "priority", "preemptible",
                    "auto_rebook", "waitlist"]
        return ["user", "team", "title", "gpu_list", "start", "slots", "end", "priority", "preemptible",
                "status", "preempted_by", "reclaim_at", "rebook_of", "series", "occurrence", "created", "reason"]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return ["user", "team", "gpu_list", "end", "status", "preempted_by", "reclaim_at", "rebook_of", "series",
                "occurrence", "created"]

    def get_changeform_initial_data(self, request):
        return {"user": request.user.pk, "slots": 1}

    @admin.display(description="GPUs")
    def gpu_list(self, obj):
        return ", ".join(a.gpu.name for a in obj.allocations.select_related("gpu__node"))

    def save_model(self, request, obj, form, change):
        # The form's clean() already saved through the services; adopt the row it wrote.
        obj.pk = form.saved.pk
        obj._state.adding = False

    def has_delete_permission(self, request, obj=None):
        # Bookings are cancelled, never deleted: their history stays in the audit log.
        return False

    @admin.action(description="Cancel selected reservations")
    def cancel_selected(self, request, queryset):
        _cancel_each(self, request, queryset, "reservation(s)", lambda reservation: services.reservation_cancel(
            reservation_id=reservation.pk, actor=request.user, reason="Cancelled in the admin."
        ))


class CreatedBetweenFilter(admin.ListFilter):
    """Entries written from one day to another, both included, in the viewer's zone: a range, where
    date_hierarchy and the date filter only pick one day, month or year."""

    title = "created between"
    parameters = ("created_from", "created_to")
    template = "admin/reservations/auditentry/created_between_filter.html"

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        for name in self.parameters:
            if name in params:
                self.used_parameters[name] = params.pop(name)[-1].strip()

    def has_output(self):
        return True

    def expected_parameters(self):
        return list(self.parameters)

    def _day_start(self, name, days_after=0):
        value = self.used_parameters.get(name)
        if not value:
            return None
        try:
            day = date.fromisoformat(value) + timedelta(days=days_after)
        except (ValueError, OverflowError) as exc:
            # The admin answers a bad lookup by showing the list unfiltered with an error flag.
            raise IncorrectLookupParameters(f"{name}: {exc}") from None
        return timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())

    def queryset(self, request, queryset):
        start, end = self._day_start("created_from"), self._day_start("created_to", days_after=1)
        if start is not None:
            queryset = queryset.filter(created__gte=start)
        if end is not None:
            queryset = queryset.filter(created__lt=end)
        return queryset

    def choices(self, changelist):
        # One "choice": the form, which keeps the other filters and the search as hidden fields.
        yield {
            "from": self.used_parameters.get("created_from", ""),
            "to": self.used_parameters.get("created_to", ""),
            "others": [(k, v) for k, v in changelist.params.items() if k not in self.parameters],
        }


class StaffActorFilter(admin.RelatedFieldListFilter):
    """Who acted: the staff are listed (the admins' own changes); anyone else by the search on the
    username (or ?actor__id__exact=). Django's RelatedOnlyFieldListFilter would list every actor of
    the log by a DISTINCT over all its entries on each page view."""

    def field_choices(self, field, request, model_admin):
        return field.get_choices(include_blank=False, limit_choices_to={"is_staff": True}, ordering=("username",))


class _Echo:
    """A file-like object whose write() returns what it was given: csv.writer formats one row at a
    time for a streamed response (Django's docs, "Streaming large CSV files")."""

    def write(self, value):
        return value


def _csv_cell(value):
    # A cell starting like a formula would be run by spreadsheet programs (CSV injection); reasons
    # and targets are free text.
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only for everyone, superusers included: the log is evidence. Filtered, searched, and
    exported as CSV with the same filters and search (the "Export CSV" link on the list)."""

    list_display = ["created", "actor", "action", "booking", "team", "target", "reason"]
    list_filter = [
        "action",
        CreatedBetweenFilter,
        ("created", admin.DateFieldListFilter),
        ("actor", StaffActorFilter),
        ("reservation__team", admin.RelatedFieldListFilter),
    ]
    list_select_related = ["actor", "reservation__team"]
    # "=reservation__id": a booking's number finds its entries (a word is not tried as one).
    search_fields = ["reason", "target", "actor__username", "=reservation__id"]
    search_help_text = "Reason, target (gpu:3, team:7), actor's username, or a booking's number."
    # No date_hierarchy (its links come from a DISTINCT over every entry) and no full count: the log
    # grows for years, and the list reads a page of it (the dates: "created between" and the date filter).
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    show_facets = admin.ShowFacets.NEVER  # "Show counts" would count every row for each filter choice
    readonly_fields = ["created", "actor", "action", "reservation", "target", "reason", "before", "after"]
    change_list_template = "admin/reservations/auditentry/change_list.html"
    # Rows read from the database per round trip while exporting.
    export_chunk_size = 2000
    export_columns = [
        ("created", "created"), ("actor", "actor__username"), ("action", "action"),
        ("reservation", "reservation_id"), ("team", "reservation__team__slug"), ("target", "target"),
        ("reason", "reason"), ("before", "before"), ("after", "after"),
    ]

    @admin.display(description="reservation", ordering="reservation_id")
    def booking(self, obj):
        # The booking's number filters the list to its whole history.
        if obj.reservation_id is None:
            return ""
        return format_html('<a href="?reservation__id__exact={0}">#{0}</a>', obj.reservation_id)

    @admin.display(description="team", ordering="reservation__team__slug")
    def team(self, obj):
        return obj.reservation.team.slug if obj.reservation_id else ""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path("export.csv", self.admin_site.admin_view(self.export_csv), name="%s_%s_export" % info),
            *super().get_urls(),
        ]

    def export_csv(self, request):
        """The entries the list shows (its filters and search, in its order), all pages, streamed:
        an admin action could only export the rows ticked on one page, and a whole log read into
        memory at once could be millions of rows."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            # As changelist_view does: back to the list, unfiltered, with the admin's error flag
            # ("e=1"); exporting other rows than were asked for would be worse than none.
            info = self.opts.app_label, self.opts.model_name
            return HttpResponseRedirect(reverse("admin:%s_%s_changelist" % info) + "?e=1")
        rows = (
            changelist.get_queryset(request)
            .values_list(*(column for _, column in self.export_columns))
            .iterator(chunk_size=self.export_chunk_size)
        )
        writer = csv.writer(_Echo())
        header = [name for name, _ in self.export_columns]

        def lines():
            yield writer.writerow(header)
            for created, *rest, before, after in rows:
                cells = [created.astimezone(dt_timezone.utc).isoformat(), *map(_csv_cell, rest)]
                cells += [_csv_cell(json.dumps(v, cls=DjangoJSONEncoder)) if v is not None else "" for v in (before, after)]
                yield writer.writerow(cells)

        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        return StreamingHttpResponse(
            lines(), content_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.csv"'},
        )


@admin.register(Series)
class SeriesAdmin(admin.ModelAdmin):
    """Recurring bookings, to review and cancel; they are made from the booking form or the API
    (POST /api/v1/series/), and each occurrence is an ordinary booking in the list of reservations."""

    list_display = ["id", "title", "user", "team", "rule_in_words", "slots", "gpu_count", "on_conflict", "created", "cancelled_at"]
    list_filter = ["team", "on_conflict"]
    list_select_related = ["user", "team"]
    search_fields = ["title", "user__username", "team__slug"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    ordering = ["-created", "-id"]
    actions = ["cancel_selected"]
    fields = [
        "user", "team", "title", "rule", "rule_in_words", "first_start", "time_zone", "slots", "gpu_ids", "gpu_count",
        "priority", "preemptible", "borrow", "on_conflict", "work", "booked_through", "ends_before",
        "cancelled_occurrences", "skipped", "cancelled_at", "created",
    ]
    readonly_fields = fields

    @admin.display(description="rule")
    def rule_in_words(self, obj):
        return recurrence.stored_words(obj)

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Cancel selected series (their occurrences to come)")
    def cancel_selected(self, request, queryset):
        _cancel_each(self, request, queryset, "series", lambda series: services.series_cancel(
            series_id=series.pk, actor=request.user, scope="all", reason="Cancelled in the admin."
        ))


def _cancel_each(model_admin, request, queryset, noun, cancel):
    """An admin action: `cancel` each selected row through its service, and say how many were and
    which were not, and why."""
    done, failed = 0, []
    for row in queryset:
        try:
            cancel(row)
            done += 1
        except (BookingError, PermissionDenied) as exc:
            failed.append(f"#{row.pk}: {getattr(exc, 'message', exc)}")
    if done:
        model_admin.message_user(request, f"Cancelled {done} {noun}.", messages.SUCCESS)
    if failed:
        model_admin.message_user(request, "Not cancelled: " + "; ".join(failed), messages.WARNING)


@admin.register(Notice)
class NoticeAdmin(admin.ModelAdmin):
    list_display = ["created", "user", "kind", "reservation", "emailed_at", "webhook_delivered_at", "webhook_attempts"]
    list_filter = ["kind"]
    list_select_related = ["user", "reservation"]
    raw_id_fields = ["user", "reservation"]
    # A notice a booking's change: years of them; a page of the list, no full count.
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    show_facets = admin.ShowFacets.NEVER  # "Show counts" would count every row for each filter choice
    readonly_fields = [
        "created", "data", "emailed_at", "email_claimed_at", "email_error",
        "webhook_delivered_at", "webhook_attempts", "webhook_error",
    ]
