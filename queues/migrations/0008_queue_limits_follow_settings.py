"""A queue's defaults and upper limits follow the WONDERQ_* settings (validators and defaults only: no SQL on PostgreSQL)."""

import django.core.validators
import queues.models
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('queues', '0007_ack_function'),
    ]

    operations = [
        migrations.AlterField(
            model_name='queue',
            name='delay_seconds',
            field=models.PositiveIntegerField(default=0, help_text='Default delay before a new message can be received.', validators=[django.core.validators.MaxValueValidator(queues.models.max_delay_seconds)]),
        ),
        migrations.AlterField(
            model_name='queue',
            name='max_message_bytes',
            field=models.PositiveIntegerField(default=queues.models.message_bytes_limit, help_text='Largest body plus attributes accepted, in UTF-8 bytes (never more than WONDERQ_MAX_MESSAGE_BYTES).', validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(queues.models.message_bytes_limit)]),
        ),
        migrations.AlterField(
            model_name='queue',
            name='max_receives',
            field=models.PositiveIntegerField(default=queues.models.default_max_receives, help_text='Deliveries after which a timed-out message goes to review (requeue queues).', validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(queues.models.max_receives_limit)]),
        ),
        migrations.AlterField(
            model_name='queue',
            name='visibility_timeout',
            field=models.PositiveIntegerField(default=queues.models.default_visibility_timeout, help_text='Seconds a received message stays leased before it times out.', validators=[django.core.validators.MaxValueValidator(queues.models.max_visibility_timeout)]),
        ),
    ]
