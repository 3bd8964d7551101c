"""The calendar, its event feed and the booking form. (Being written.)"""

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import render


@login_required
def calendar_page(request):
    return render(request, "web/placeholder.html", {"what": "Calendar"})


@login_required
def event_feed(request):
    return JsonResponse([], safe=False)


@login_required
def book(request):
    return render(request, "web/placeholder.html", {"what": "Book"})
