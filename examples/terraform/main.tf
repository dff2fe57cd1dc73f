# Secrets Manager changes -> EventBridge -> SQS, read by Lockstep stores that set
# spec.provider.aws.events.queueURL. Secrets Manager's API calls reach EventBridge through
# CloudTrail: the account needs a trail (any trail that logs management events).

resource "aws_sqs_queue" "dlq" {
  name                      = "${var.name}-dlq"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
  tags                      = var.tags
}

resource "aws_sqs_queue" "events" {
  name = var.name
  # An event older than a day is covered by polling anyway (fallbackInterval).
  message_retention_seconds  = 86400
  receive_wait_time_seconds  = 20
  visibility_timeout_seconds = 60
  sqs_managed_sse_enabled    = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq.arn
    maxReceiveCount     = var.max_receive_count
  })
  tags = var.tags
}

resource "aws_cloudwatch_event_rule" "secrets_manager" {
  name          = var.name
  description   = "Secrets Manager changes for Lockstep"
  event_pattern = file("${path.module}/event-pattern.json")
  tags          = var.tags
}

resource "aws_cloudwatch_event_target" "queue" {
  rule      = aws_cloudwatch_event_rule.secrets_manager.name
  target_id = "lockstep"
  arn       = aws_sqs_queue.events.arn
}

# Only this rule may send to the queue.
data "aws_iam_policy_document" "queue" {
  statement {
    sid       = "EventBridgeSends"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.events.arn]
    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }
    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.secrets_manager.arn]
    }
  }
}

resource "aws_sqs_queue_policy" "events" {
  queue_url = aws_sqs_queue.events.id
  policy    = data.aws_iam_policy_document.queue.json
}

# What Lockstep needs of the queue, and nothing else.
data "aws_iam_policy_document" "operator" {
  statement {
    sid       = "LockstepReadsEvents"
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.events.arn]
  }
}

resource "aws_iam_role_policy" "operator" {
  count  = var.operator_role_name == "" ? 0 : 1
  name   = "${var.name}-read"
  role   = var.operator_role_name
  policy = data.aws_iam_policy_document.operator.json
}
