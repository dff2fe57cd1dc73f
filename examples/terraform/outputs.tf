output "queue_url" {
  description = "Set as spec.provider.aws.events.queueURL of the stores that read these events."
  value       = aws_sqs_queue.events.id
}

output "queue_arn" {
  value = aws_sqs_queue.events.arn
}

output "dlq_url" {
  value = aws_sqs_queue.dlq.id
}

output "policy_json" {
  description = "The operator's policy on the queue, to attach where operator_role_name is not used."
  value       = data.aws_iam_policy_document.operator.json
}
