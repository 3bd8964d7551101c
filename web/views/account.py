"""The profile page. (Being written: placeholder view.)"""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def profile(request):
    return render(request, "web/placeholder.html", {"what": "Profile"})
