"""Forms the admin's confirmation pages and token creation use."""

from __future__ import annotations

from django import forms

from queues.conf import app_settings
from queues.models import ApiToken


class DecisionForm(forms.Form):
    """The optional note an operator leaves with a review decision."""

    note = forms.CharField(
        required=False,
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Kept with each decision in the review log.",
    )


class DelayedDecisionForm(DecisionForm):
    """A note plus the delay before requeued messages can be received again."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Built here, not at import, so the limit follows WONDERQ_MAX_DELAY_SECONDS.
        limit = app_settings.MAX_DELAY_SECONDS
        self.fields = {
            "delay_seconds": forms.IntegerField(
                min_value=0,
                max_value=limit,
                initial=60,
                help_text=f"Seconds before the messages can be received again (0-{limit}).",
            ),
            **self.fields,
        }


class ApiTokenAddForm(forms.ModelForm):
    """What an operator chooses for a new token; the key and its digest come from token_create."""

    class Meta:
        model = ApiToken
        fields = ["user", "name", "expires_at"]
